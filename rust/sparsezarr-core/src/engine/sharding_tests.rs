//! Tests of sharded reads and writes through codec plans (layout, write orders, partial writes).

#[cfg(test)]
mod tests {
    use zarrs::array::FillValue;

    use crate::engine::codec::{ArrayRepr, CodecPlan, EngineOptions, ValueSource, codecs_from_json};
    use crate::engine::selection::{DimSel, Selection};
    use crate::engine::shard_index::{WriteOrder, c_linear};
    use crate::engine::strided::RawView;
    use crate::error::Error;
    use crate::store::BytesValue;

    fn plan(inner: &str, loc: &str) -> CodecPlan {
        let json = format!(
            r#"[{{"name":"sharding_indexed","configuration":{{"chunk_shape":[2,3],"codecs":{inner},"index_codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}},{{"name":"crc32c"}}],"index_location":"{loc}"}}}}]"#
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let repr = ArrayRepr { shape: vec![4, 6], data_type: zarrs::array::data_type::uint16(), fill_value: FillValue::from(7u16) };
        CodecPlan::new(&codecs_from_json(&v).unwrap(), repr, &EngineOptions::default()).unwrap()
    }

    #[test]
    fn write_orders_match_zarr_python() {
        // zarr-python's orders for a (3, 2) grid of inner chunks, as C-order linear indices;
        // Morton: bits interleaved with dimension 0 lowest, (3, 2) clipped out of the 4 x 2 curve.
        let grid = [3, 2];
        let lin = |c: &[(u64, u64)]| c.iter().map(|&(a, b)| c_linear(&[a, b], &grid)).collect::<Vec<_>>();
        assert_eq!(WriteOrder::Morton.permutation(&grid), lin(&[(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1)]));
        assert_eq!(WriteOrder::Lexicographic.permutation(&grid), lin(&[(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]));
        assert_eq!(WriteOrder::Colexicographic.permutation(&grid), lin(&[(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]));
        assert_eq!(WriteOrder::parse("unordered").unwrap(), WriteOrder::Lexicographic);
        assert!(WriteOrder::parse("hilbert").is_err());
        // Every order is a permutation, also for grids with singleton and uneven dimensions.
        for grid in [vec![1u64], vec![5, 1, 3], vec![7, 9], vec![2, 2, 2, 2]] {
            for order in [WriteOrder::Morton, WriteOrder::Lexicographic, WriteOrder::Colexicographic] {
                let mut p = order.permutation(&grid);
                p.sort_unstable();
                assert_eq!(p, (0..grid.iter().product::<u64>() as usize).collect::<Vec<_>>());
            }
        }
    }

    fn as_bytes(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    #[test]
    fn write_read_partial() {
        for loc in ["start", "end"] {
            for inner in [
                r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":1,"checksum":false}}]"#,
                r#"[{"name":"sharding_indexed","configuration":{"chunk_shape":[1,3],"codecs":[{"name":"bytes","configuration":{"endian":"little"}}]}}]"#,
            ] {
                let p = plan(inner, loc);
                let full: Vec<u16> = (0..24).collect();
                let full_b = as_bytes(&full);
                let view = RawView::c_order_const(&full_b, &[4, 6], 2);
                let sel = Selection::whole(&[4, 6], &[0, 0]);
                let shard = p.write_from(None, &sel, &ValueSource::Array { view: &view, swap: 0 }, false).unwrap().unwrap().into_vec();
                // Partial write of one element, the rest must be unchanged.
                let one = Selection::Orthogonal { chunk: vec![DimSel::range(3, 1), DimSel::range(5, 1)], out: vec![None, None] };
                let shard2 = p
                    .write_from(Some(&BytesValue::new("k", &shard)), &one, &ValueSource::Scalar(&99u16.to_ne_bytes()), false)
                    .unwrap()
                    .unwrap()
                    .into_vec();
                let mut got = vec![0u8; 48];
                let out = RawView::c_order(&mut got, &[4, 6], 2);
                p.read_into(&BytesValue::new("k", &shard2), &sel, &out, 0, None).unwrap();
                let mut want = full.clone();
                want[23] = 99;
                assert_eq!(got, as_bytes(&want));
                // All-fill write deletes the shard.
                let gone = p.write_from(None, &sel, &ValueSource::Scalar(&7u16.to_ne_bytes()), false).unwrap();
                assert!(gone.is_none());
            }
        }
    }

    #[test]
    fn corrupt_shard_is_an_error() {
        let p = plan(r#"[{"name":"bytes","configuration":{"endian":"little"}}]"#, "end");
        let sel = Selection::whole(&[4, 6], &[0, 0]);
        let mut got = vec![0u8; 48];
        let out = RawView::c_order(&mut got, &[4, 6], 2);
        assert!(matches!(p.read_into(&BytesValue::new("k", &[1, 2, 3]), &sel, &out, 0, None), Err(Error::Decode { .. })));
        let data = as_bytes(&(0..24).collect::<Vec<_>>());
        let view = RawView::c_order_const(&data, &[4, 6], 2);
        let mut shard = p.write_from(None, &sel, &ValueSource::Array { view: &view, swap: 0 }, false).unwrap().unwrap().into_vec();
        let n = shard.len();
        shard[n - 10] ^= 1;
        assert!(matches!(p.read_into(&BytesValue::new("k", &shard), &sel, &out, 0, None), Err(Error::Decode { .. })));
    }

    /// Shards checked against an independent implementation, both ways: the `zarrs` crate's own
    /// sharding codec writes an array that the engine reads, and reads an array the engine wrote
    /// (with a zstd inner chain, a crc32c index at either end, edge shards, missing inner chunks).
    #[test]
    fn shards_agree_with_zarrs_both_ways() {
        use std::sync::Arc;

        use zarrs::array::{Array, ArraySubset};
        use zarrs::storage::{ReadableStorageTraits, StoreKey, WritableStorageTraits};

        use crate::engine::{ArrayEngine, ChunkRequest, Concurrency};
        use crate::metadata::ArrayMeta;
        use crate::store::{MemoryStore, Store};

        for loc in ["end", "start"] {
            let json = format!(
                r#"{{"zarr_format":3,"node_type":"array","shape":[10,14],"data_type":"uint16","chunk_grid":{{"name":"regular","configuration":{{"chunk_shape":[4,6]}}}},"chunk_key_encoding":{{"name":"default"}},"fill_value":7,"codecs":[{{"name":"sharding_indexed","configuration":{{"chunk_shape":[2,3],"codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}},{{"name":"zstd","configuration":{{"level":1,"checksum":false}}}}],"index_codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}},{{"name":"crc32c"}}],"index_location":"{loc}"}}}}]}}"#
            );
            let mut want: Vec<u16> = (0..140u16).map(|v| v * 3 + 1).collect();
            for r in 4..6 {
                for c in 0..14 {
                    want[r * 14 + c] = 7; // a band of fill values: inner chunks that are not stored
                }
            }
            let meta = ArrayMeta::parse(&json, "").unwrap();
            let grid: Vec<u64> = meta.shape.iter().zip(&meta.chunk_shape).map(|(n, c)| n.div_ceil(*c)).collect();
            let engine = ArrayEngine::from_meta(&meta, None, EngineOptions::default(), Concurrency::default()).unwrap();
            let whole_request = |gr: u64, gc: u64| {
                let (r0, c0) = (gr * 4, gc * 6);
                let (nr, nc) = (4.min(10 - r0), 6.min(14 - c0));
                let selection = Selection::Orthogonal {
                    chunk: vec![DimSel::range(0, nr), DimSel::range(0, nc)],
                    out: vec![Some(DimSel::range(r0, nr)), Some(DimSel::range(c0, nc))],
                };
                ChunkRequest { key: meta.keys.key(&[gr, gc]), selection, complete: nr == 4 && nc == 6 }
            };
            let requests: Vec<ChunkRequest> =
                (0..grid[0]).flat_map(|r| (0..grid[1]).map(move |c| (r, c))).map(|(r, c)| whole_request(r, c)).collect();

            // zarrs writes, the engine reads.
            let zstore = Arc::new(zarrs::storage::store::MemoryStore::new());
            let zarray = Array::new_with_metadata(zstore.clone(), "/", serde_json::from_str(&json).unwrap()).unwrap();
            zarray.store_array_subset(&ArraySubset::new_with_ranges(&[0..10, 0..14]), want.as_slice()).unwrap();
            let ours = MemoryStore::new(false);
            for r in &requests {
                if let Some(bytes) = zstore.get(&StoreKey::new(r.key.clone()).unwrap()).unwrap() {
                    ours.set(&r.key, bytes.to_vec()).unwrap();
                }
            }
            let mut got = vec![0u16; 140];
            // SAFETY: `got` is 10 x 14 u16 in C order, written only through this view.
            let view = unsafe { RawView::new(got.as_mut_ptr().cast(), vec![10, 14], vec![28, 2], 2, true) };
            engine.read(&ours, &requests, &view, 0).unwrap();
            assert_eq!(got, want, "engine reading zarrs' shards (index at {loc})");

            // The engine writes, zarrs reads.
            let ours = MemoryStore::new(false);
            let src = RawView::c_order_const(bytemuck_u16(&want), &[10, 14], 2);
            engine.write(&ours, &requests, &ValueSource::Array { view: &src, swap: 0 }, false).unwrap();
            let zstore = Arc::new(zarrs::storage::store::MemoryStore::new());
            for key in ours.list("").unwrap() {
                zstore.set(&StoreKey::new(key.clone()).unwrap(), ours.get(&key).unwrap().unwrap().into()).unwrap();
            }
            let zarray = Array::new_with_metadata(zstore, "/", serde_json::from_str(&json).unwrap()).unwrap();
            let back: Vec<u16> = zarray.retrieve_array_subset::<Vec<u16>>(&ArraySubset::new_with_ranges(&[0..10, 0..14])).unwrap();
            assert_eq!(back, want, "zarrs reading the engine's shards (index at {loc})");
        }
    }

    fn bytemuck_u16(v: &[u16]) -> &[u8] {
        // SAFETY: u16 has no padding; the byte view covers exactly the slice.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 2) }
    }
}
