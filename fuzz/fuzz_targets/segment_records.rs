//! Arbitrary bytes as a clip segment file (`proto_schema::segment`): the header and
//! then records parsed as the recorder does. Must never panic, never loop forever, and
//! anything accepted must survive an encode/parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_schema::segment::{Record, SegmentHeader};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((header, mut at))) = SegmentHeader::parse(data) else {
        // Records alone, too.
        if let Ok(Some((r, _))) = Record::parse(data) {
            round_trip(&r);
        }
        return;
    };
    let again = header.encode();
    assert_eq!(SegmentHeader::parse(&again), Ok(Some((header.clone(), again.len()))));
    let _ = header.ts_to_ns(i64::MAX);
    let _ = header.ns_to_ts(i64::MIN);
    while let Ok(Some((r, n))) = Record::parse(&data[at..]) {
        assert!(n > 0);
        round_trip(&r);
        at += n;
    }
});

fn round_trip(r: &Record) {
    let b = r.encode();
    assert_eq!(Record::parse(&b), Ok(Some((r.clone(), b.len()))));
}
