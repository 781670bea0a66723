//! Format is crash-safe: at every fence of `Log::create`, every crash image the simulator
//! produces (exhaustively where there are few, seeded samples otherwise) probes `Blank`
//! (an interrupted format, formatted again by the next create) or `Formatted` (an empty log
//! that opens), never `Damaged`; and the image after the format completed probes
//! `Formatted` with both copies good.

use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::Mutex;
use pmem_emul::SimPmem;
use pstream_crashtest::kit::{options, small_config};
use pstream_engine::{probe, Log, Probe};

const POOL_BYTES: usize = 256 * 1024;

#[derive(Default)]
struct Tally {
    fences: u64,
    images: u64,
    blank: u64,
    formatted: u64,
    failures: Vec<String>,
}

/// What a crash image must be: `Blank` and formattable, or `Formatted` and openable.
fn check_image(image: &[u8], fence: Option<u64>, tally: &mut Tally) {
    tally.images += 1;
    let sim = SimPmem::from_image(image.to_vec());
    match probe(&sim) {
        Ok(Probe::Blank { .. }) => {
            tally.blank += 1;
            if let Err(error) = Log::create(sim, small_config(), options(1)) {
                tally.failures.push(format!(
                    "fence {fence:?}: blank image does not format: {error}"
                ));
            }
        }
        Ok(Probe::Formatted { .. }) => {
            tally.formatted += 1;
            match Log::open(sim, options(1)) {
                Ok((log, _)) if log.list_streams().is_empty() => {
                    if probe(log.pmem()).ok()
                        != Some(Probe::Formatted {
                            damaged_copies: vec![],
                        })
                    {
                        tally
                            .failures
                            .push(format!("fence {fence:?}: open did not repair the copies"));
                    }
                }
                Ok(_) => tally
                    .failures
                    .push(format!("fence {fence:?}: a fresh format holds streams")),
                Err(error) => tally.failures.push(format!(
                    "fence {fence:?}: formatted image does not open: {error}"
                )),
            }
        }
        other => tally
            .failures
            .push(format!("fence {fence:?}: crash image probes {other:?}")),
    }
}

fn format_under_crashes(start: Vec<u8>, seed: u64) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sim = SimPmem::from_image(start);
    let hook_tally = Arc::clone(&tally);
    sim.set_fence_hook(Some(Box::new(move |point| {
        let mut tally = hook_tally.lock();
        tally.fences += 1;
        let fence = point.fence_index();
        point.for_each_image(256, 48, seed ^ fence.unwrap_or(0), |image| {
            check_image(image, fence, &mut tally);
            ControlFlow::Continue(())
        });
    })));
    let log = Log::create(sim, small_config(), options(1)).expect("create");
    let sim = log.close();
    sim.set_fence_hook(None);
    let done = sim.persisted_image();
    assert_eq!(
        probe(&SimPmem::from_image(done)).unwrap(),
        Probe::Formatted {
            damaged_copies: vec![]
        }
    );
    Arc::try_unwrap(tally)
        .ok()
        .expect("hook released")
        .into_inner()
}

#[test]
fn every_crash_image_of_a_format_is_blank_or_formatted() {
    let tally = format_under_crashes(vec![0; POOL_BYTES], 11);
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert!(tally.fences >= 3, "format has at least three fences");
    assert!(tally.blank > 0 && tally.formatted > 0, "both outcomes seen");
}

#[test]
fn a_format_interrupted_and_run_again_is_crash_safe_too() {
    // Crash a format right after its marker is durable, then format that image under crashes.
    let sim = SimPmem::new(POOL_BYTES);
    let first: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
    let hook_first = Arc::clone(&first);
    sim.set_fence_hook(Some(Box::new(move |point| {
        if point.fence_index() == Some(1) {
            point.for_each_image(1, 1, 0, |image| {
                *hook_first.lock() = Some(image.to_vec());
                ControlFlow::Break(())
            });
        }
    })));
    Log::create(sim, small_config(), options(1)).expect("create");
    let interrupted = first.lock().take().expect("a second fence");
    assert_eq!(
        probe(&SimPmem::from_image(interrupted.clone())).unwrap(),
        Probe::Blank {
            interrupted_format: true
        }
    );
    let tally = format_under_crashes(interrupted, 12);
    assert!(tally.failures.is_empty(), "{:#?}", tally.failures);
    assert_eq!(tally.formatted + tally.blank, tally.images);
}
