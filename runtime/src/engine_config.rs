//! The wasmtime configurations wasmbox's engines are made from: one base, and the pooling
//! allocator on top of it. A leaf: the engine and the compiler helper both start from here, so
//! what the helper compiles loads into either engine.

use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The engine configuration every engine starts from, the compiler helper's included (so what it
/// compiles loads here).
pub(crate) fn base_config() -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    c.wasm_component_model(true);
    c.wasm_component_model_async(true);
    c.max_wasm_stack(1 << 20);
    c
}

/// Instances of components the pooling allocator holds at once.
pub(crate) const POOL_INSTANCES: u32 = 1000;
/// Linear memories (and tables) the pool reserves: each reservation is address space, not memory.
pub(crate) const POOL_MEMORIES: u32 = 1000;
/// Core instances one component may make; core instances are counted, not reserved, so the pool
/// allows this many for each of its [`POOL_INSTANCES`] and never runs out of them first.
const POOL_CORE_PER_COMPONENT: u32 = 100;

/// Bytes of each linear memory a pooled slot keeps resident after its instance ends.
pub(crate) const MEMORY_KEEP_RESIDENT: u64 = 256 << 10;
/// Bytes of each table a pooled slot keeps resident after its instance ends.
pub(crate) const TABLE_KEEP_RESIDENT: u64 = 64 << 10;

/// [`base_config`] with the pooling allocator.
pub(crate) fn pooling_config() -> Config {
    let mut c = base_config();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_memories(POOL_MEMORIES)
        .total_tables(POOL_MEMORIES)
        .total_core_instances(POOL_INSTANCES * POOL_CORE_PER_COMPONENT)
        .total_component_instances(POOL_INSTANCES)
        .max_memories_per_component(50)
        .max_tables_per_component(50)
        .max_core_instances_per_component(POOL_CORE_PER_COMPONENT)
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT as usize)
        .table_keep_resident(TABLE_KEEP_RESIDENT as usize)
        // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), a freed slot's written pages within
        // the keep-resident budget are copied back in place instead of unmapped: no page faults
        // on the slot's next use and no TLB shootdowns across the executor's threads, which
        // under concurrent requests cost more than the guests themselves.
        .pagemap_scan(wasmtime::Enabled::Auto);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

/// How many instances of `component` the engine's allocator can hold at once: `None` when it
/// allocates on demand (no fixed bound) or the component's needs cannot be known.
pub(crate) fn pool_capacity(
    pooling: bool,
    component: &wasmtime::component::Component,
) -> Option<usize> {
    if !pooling {
        return None;
    }
    let need = component.resources_required()?;
    let per = |n: u32| POOL_MEMORIES.checked_div(n).unwrap_or(POOL_INSTANCES);
    let fits = POOL_INSTANCES
        .min(per(need.num_memories))
        .min(per(need.num_tables));
    Some(fits.max(1) as usize)
}

/// At most what one pooled slot that held an instance of `component` keeps resident once the
/// instance has ended: up to the keep-resident bytes of each of its memories and tables, no more
/// than their initial sizes. Nothing without the pooling allocator.
pub(crate) fn slot_residue(pooling: bool, component: &wasmtime::component::Component) -> u64 {
    let Some(need) = component.resources_required().filter(|_| pooling) else {
        return 0;
    };
    let memory = need
        .max_initial_memory_size
        .map_or(0, |pages| pages.saturating_mul(64 << 10))
        .min(MEMORY_KEEP_RESIDENT);
    let table = need
        .max_initial_table_size
        .map_or(0, |elements| elements.saturating_mul(8))
        .min(TABLE_KEEP_RESIDENT);
    u64::from(need.num_memories) * memory + u64::from(need.num_tables) * table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ArtifactKind;
    use wasmtime::Engine;

    /// The compiler helper always compiles with [`base_config`]; what it compiles must load into
    /// a pooling engine too, so the allocator must not be part of the compatibility hash.
    #[test]
    fn the_allocator_does_not_change_what_compiled_code_loads_into() {
        let hash = |c: &Config| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(
                &Engine::new(c).unwrap().precompile_compatibility_hash(),
                &mut h,
            );
            std::hash::Hasher::finish(&h)
        };
        assert_eq!(hash(&base_config()), hash(&pooling_config()));
        let artifact = Engine::new(&base_config())
            .unwrap()
            .precompile_module(b"(module (func (export \"f\")))")
            .unwrap();
        let pooling = Engine::new(&pooling_config()).unwrap();
        crate::engine::deserialize_helper_output(&pooling, &artifact, ArtifactKind::Module)
            .unwrap();
    }

    #[test]
    fn a_slot_keeps_at_most_its_keep_resident_budget() {
        let engine = Engine::new(&pooling_config()).unwrap();
        let small = wasmtime::component::Component::new(
            &engine,
            "(component (core module $m (memory 1) (table 10 funcref))
                        (core instance (instantiate $m)))",
        )
        .unwrap();
        // One page of memory, ten table elements: no more than they hold.
        assert_eq!(slot_residue(true, &small), (64 << 10) + 80);
        let big = wasmtime::component::Component::new(
            &engine,
            "(component (core module $a (memory 100) (table 10000 funcref))
                        (core module $b (memory 10))
                        (core instance (instantiate $a))
                        (core instance (instantiate $b)))",
        )
        .unwrap();
        assert_eq!(
            slot_residue(true, &big),
            2 * MEMORY_KEEP_RESIDENT + TABLE_KEEP_RESIDENT
        );
        assert_eq!(slot_residue(false, &big), 0);
    }
}
