//! The whole system on in-repo fixtures only (no shared assets): core-agent supervises a
//! frame kernel playing the synthetic boxes footage and a model server running the demo
//! detector; the results file fills with `person` detections of the boxes.

mod common;

use std::time::Duration;

use common::{bin_dir, of, serial, wait_for, Agent, Dirs};
use framebus_testkit::{assets, fixtures};

#[test]
fn fixture_camera_and_demo_model_give_person_results() {
    let _serial = serial();
    if assets::require_ort().is_none() {
        return;
    }
    bin_dir();
    let dirs = Dirs::new();
    let mut config = dirs.agent_table();
    config += &format!(
        "[[cameras]]\nid = \"boxes\"\nsource = \"{}\"\nfps = 25\nloop = true\n\n\
         [[models]]\nid = \"demo\"\npath = \"{}\"\nthreads = 1\n\n\
         [[subscriptions]]\ncamera = \"boxes\"\nmodel = \"demo\"\nfps = 5\n\n",
        fixtures::boxes_video().display(),
        fixtures::demo_model().display()
    );
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    let with_people = wait_for(
        Duration::from_secs(60),
        "10 results with person detections",
        || {
            let r = agent.results();
            let hits: Vec<_> = of(&r, "boxes", "demo")
                .into_iter()
                .filter(|rec| {
                    rec.detections
                        .iter()
                        .any(|d| d.class_name == "person" && d.confidence >= 0.5)
                })
                .cloned()
                .collect();
            (hits.len() >= 10).then_some(hits)
        },
    );
    // Every detection is on the band the boxes walk in (y 60..310 of 360; the coarse
    // demo detector may split a tall box in two, so up to two per box), never on the
    // empty dark rows above and below.
    let (lo, hi) = ((60.0 - 16.0) / 360.0, (310.0 + 16.0) / 360.0);
    for rec in &with_people {
        let firm: Vec<_> = rec
            .detections
            .iter()
            .filter(|d| d.confidence >= 0.5)
            .collect();
        assert!(firm.len() <= 2 * fixtures::BOXES, "{rec:?}");
        for d in firm {
            assert!(d.bbox[2] > d.bbox[0] && d.bbox[3] > d.bbox[1], "{d:?}");
            let cy = (d.bbox[1] + d.bbox[3]) / 2.0;
            assert!(
                (lo..=hi).contains(&cy),
                "detection off the boxes' band: {d:?}"
            );
        }
    }
    assert!(agent.stop(Duration::from_secs(30)).success());
}
