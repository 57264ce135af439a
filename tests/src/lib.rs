//! End-to-end tests of wasmbox live in `tests/e2e`; this library is empty.
