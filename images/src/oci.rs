//! The OCI image documents as types (`oci-spec`'s): a manifest or an index read from its bytes
//! once, its digests parsed as it is read; an image config read leniently; the platform an
//! index entry is for; and documents written back to bytes. A leaf: every module of this crate
//! that reads or writes a manifest, an index or a config goes through here.

use oci_spec::image::{
    ArtifactManifest, Descriptor, ImageConfiguration, ImageIndex, ImageManifest,
};
use serde::Deserialize;

use crate::digest::{BadDigest, Digest};

/// Media types of indexes (lists of per-platform manifests).
pub const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The media type of the (withdrawn, still found) OCI artifact manifest.
const ARTIFACT_TYPE: &str = "application/vnd.oci.artifact.manifest.v1+json";

/// What a reference or an index entry names: a manifest, or an index of them; or an artifact
/// manifest, which only ever names blobs (a signature's, say).
#[derive(Debug, Clone)]
pub enum Document {
    /// A list of per-platform manifests.
    Index(Box<ImageIndex>),
    /// One image's config and layers.
    Manifest(Box<ImageManifest>),
    /// Blobs, and the manifest they are about.
    Artifact(Box<ArtifactManifest>),
}

/// The fields that tell a document's kind, read before the document itself.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shape {
    schema_version: Option<serde::de::IgnoredAny>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    layers: Option<serde::de::IgnoredAny>,
    blobs: Option<serde::de::IgnoredAny>,
}

impl Document {
    /// Reads a manifest or an index: an index when its media type says so, or when it lists
    /// manifests and no layers (an index without a media type); an artifact manifest likewise
    /// (blobs, no layers); else a manifest. The error says why it does not parse.
    pub fn parse(bytes: &[u8]) -> Result<Document, String> {
        let shape: Shape = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let said = |types: &[&str]| {
            shape
                .media_type
                .as_deref()
                .is_some_and(|t| types.contains(&t))
        };
        let parsed = if said(INDEX_TYPES) || shape.manifests.is_some() && shape.layers.is_none() {
            serde_json::from_slice(bytes).map(|i| Document::Index(Box::new(i)))
        } else if said(&[ARTIFACT_TYPE]) || shape.blobs.is_some() && shape.layers.is_none() {
            serde_json::from_slice(bytes).map(|a| Document::Artifact(Box::new(a)))
        } else {
            serde_json::from_slice(bytes).map(|m| Document::Manifest(Box::new(m)))
        };
        parsed.map_err(|e| e.to_string())
    }

    /// Reads `bytes` if they are a manifest or an index (JSON with a `schemaVersion`), as a
    /// walk over an image's blobs asks of each.
    pub fn sniff(bytes: &[u8]) -> Option<Document> {
        let shape: Shape = serde_json::from_slice(bytes).ok()?;
        shape.schema_version?;
        Self::parse(bytes).ok()
    }

    /// Its media type, when it names one.
    pub fn media_type(&self) -> Option<String> {
        match self {
            Document::Index(i) => i.media_type().as_ref().map(ToString::to_string),
            Document::Manifest(m) => m.media_type().as_ref().map(ToString::to_string),
            Document::Artifact(a) => Some(a.media_type().to_string()),
        }
    }

    /// The blobs it names: an index's manifests; a manifest's config, then its layers; an
    /// artifact's blobs; then the manifest it is about (its `subject`), if any.
    pub fn referenced(&self) -> Vec<&Descriptor> {
        let (named, subject): (Vec<&Descriptor>, _) = match self {
            Document::Index(i) => (i.manifests().iter().collect(), i.subject()),
            Document::Manifest(m) => (
                std::iter::once(m.config()).chain(m.layers()).collect(),
                m.subject(),
            ),
            Document::Artifact(a) => (a.blobs().iter().collect(), a.subject()),
        };
        named.into_iter().chain(subject.as_ref()).collect()
    }
}

/// The digests the document in `bytes` names ([`Document::referenced`]); none for anything that
/// is not a manifest, an index or an artifact manifest (a config, a layer).
pub fn referenced_digests(bytes: &[u8]) -> Vec<String> {
    Document::sniff(bytes).map_or_else(Vec::new, |d| {
        d.referenced()
            .iter()
            .map(|d| d.digest().to_string())
            .collect()
    })
}

/// Reads an image config. Fields the image spec requires but artifacts' configs leave out (an
/// empty `{}`, or a wasm artifact's config without `rootfs`) read as empty: no platform, no
/// layers.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, String> {
    let mut v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    for key in ["architecture", "os"] {
        v.entry(key).or_insert_with(|| "".into());
    }
    v.entry("rootfs")
        .or_insert_with(|| serde_json::json!({"type": "layers", "diff_ids": []}));
    serde_json::from_value(serde_json::Value::Object(v)).map_err(|e| e.to_string())
}

/// A document's bytes, as written to a store or a registry: compact, its keys sorted (as Go's
/// `encoding/json` writes maps), so the same document is always the same bytes and digest.
pub fn to_bytes<T: serde::Serialize>(doc: &T) -> Vec<u8> {
    let sorted = serde_json::to_value(doc).expect("an OCI document serializes");
    serde_json::to_vec(&sorted).expect("a JSON value serializes")
}

/// An OCI image manifest of `config` and `layers`.
pub fn manifest(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
    oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(oci_spec::image::MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .expect("a manifest with its config and layers builds")
}

/// A descriptor of `size` bytes of `media_type` at `digest`.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    let digest: oci_spec::image::Digest = digest
        .to_string()
        .parse()
        .expect("a sha256 digest is an OCI digest");
    Descriptor::new(media_type.into(), size, digest)
}

/// The digest a descriptor names, as this crate's type: sha256 only.
pub fn digest(d: &Descriptor) -> Result<Digest, BadDigest> {
    d.digest().to_string().parse()
}

/// The `(os, architecture)` an index entry is for (empty when it names none).
pub fn platform(d: &Descriptor) -> (String, String) {
    d.platform().as_ref().map_or_else(Default::default, |p| {
        (p.os().to_string(), p.architecture().to_string())
    })
}

/// The `(os, architecture)` a config names, if it names both.
pub fn config_platform(c: &ImageConfiguration) -> Option<(String, String)> {
    let (os, arch) = (c.os().to_string(), c.architecture().to_string());
    (!os.is_empty() && !arch.is_empty()).then_some((os, arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn a_document_is_an_index_by_its_media_type_or_its_shape() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","size":1,"platform":{{"os":"wasip1","architecture":"wasm"}}}}]}}"#
        );
        let Document::Index(i) = Document::parse(index.as_bytes()).unwrap() else {
            panic!("an index")
        };
        assert_eq!(
            platform(&i.manifests()[0]),
            ("wasip1".into(), "wasm".into())
        );
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":2}},"layers":[]}}"#
        );
        let doc = Document::parse(manifest.as_bytes()).unwrap();
        assert!(matches!(doc, Document::Manifest(_)));
        assert_eq!(digest(doc.referenced()[0]).unwrap().to_string(), D);
        // A config is no document; a digest that does not parse is said so.
        assert!(Document::sniff(br#"{"architecture":"wasm"}"#).is_none());
        assert!(referenced_digests(b"\0asm").is_empty());
        let signed = format!(
            r#"{{"schemaVersion":2,"mediaType":"{ARTIFACT_TYPE}","artifactType":"x","blobs":[{{"mediaType":"y","digest":"{D}","size":1}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","size":2}}}}"#
        );
        assert_eq!(referenced_digests(signed.as_bytes()), [D, D]);
        let bad = manifest.replace(&D[7..], "00");
        assert!(Document::parse(bad.as_bytes()).is_err());
    }

    #[test]
    fn a_config_without_what_artifacts_leave_out_reads_as_empty() {
        let c = parse_config(b"{}").unwrap();
        assert_eq!(config_platform(&c), None);
        assert!(c.rootfs().diff_ids().is_empty());
        let c = parse_config(br#"{"os":"wasip1","architecture":"wasm","config":{"Cmd":["x"]}}"#)
            .unwrap();
        assert_eq!(config_platform(&c), Some(("wasip1".into(), "wasm".into())));
        assert_eq!(
            c.config().as_ref().and_then(|c| c.cmd().clone()),
            Some(vec!["x".to_string()])
        );
        assert!(parse_config(b"[]").is_err());
    }

    #[test]
    fn a_document_written_is_the_same_bytes_each_time_its_keys_sorted() {
        let mut c = parse_config(br#"{"os":"wasi","architecture":"wasm"}"#).unwrap();
        let labels = (0..20).map(|i| (format!("k{i:02}"), "v".to_string()));
        let mut config = oci_spec::image::Config::default();
        config.set_labels(Some(labels.collect()));
        c.set_config(Some(config));
        let bytes = to_bytes(&c);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"architecture":"wasm","config":{"Labels":{"k00":"v","k01":"v","#),
            "{text}"
        );
        assert_eq!(parse_config(&bytes).unwrap(), c);
        let d = descriptor("application/wasm", &Digest::of(b"x"), 1);
        assert_eq!(digest(&d).unwrap(), Digest::of(b"x"));
    }
}
