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
}
