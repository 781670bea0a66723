//! Use case 3, the exam file drop: students create streams in the teacher's bundle under the
//! owner's default permissions, cannot change or read back a submission, may submit several
//! times; the teacher reads them all and picks the latest. Run straight, with restarts, and
//! with crash images.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{client, user, Budget, Env, Mode};
use pmem_emul::SimPmem;
use pstream_agent::{
    Agent, AgentError, BundleRef, Creators, Metadata, PageLimit, StreamDefaults, StreamNo,
    StreamPolicy, StreamSpec,
};

#[derive(Debug, Default)]
struct Oracle {
    bundle: Option<BundleRef>,
    /// Acknowledged submissions: stream -> (student, file).
    submissions: BTreeMap<StreamNo, (String, Vec<u8>)>,
    /// The submission in flight.
    pending: Option<(String, Vec<u8>)>,
}

const ALL: PageLimit = PageLimit {
    records_max: usize::MAX,
    bytes_max: usize::MAX,
};

fn check(agent: &Agent<SimPmem>, o: &Oracle) -> Result<(), String> {
    let Some(bundle) = &o.bundle else {
        return Ok(());
    };
    let teacher = user("teacher");
    let streams = agent
        .list_streams(&teacher, bundle)
        .map_err(|e| format!("list: {e}"))?;
    for info in &streams {
        ensure!(
            info.sealed_at == Some(1),
            "submission {} is not whole: {:?}",
            info.no,
            info.sealed_at
        );
        let file = agent
            .read(&teacher, bundle, info.no, 0)
            .map_err(|e| format!("read {}: {e}", info.no))?;
        let (student, expected) = match o.submissions.get(&info.no) {
            Some(acked) => acked.clone(),
            None => o
                .pending
                .clone()
                .ok_or(format!("submission {} was never made", info.no))?,
        };
        ensure!(
            info.creator.user() == student,
            "submission {} credited to {}",
            info.no,
            info.creator
        );
        ensure!(file == expected, "submission {} changed", info.no);
        // The student cannot read it back, nobody else can read it at all.
        // (Another student's submission is answered as if it did not exist.)
        for reader in ["sam", "tia"] {
            match agent.read(&user(reader), bundle, info.no, 0) {
                Err(AgentError::PermissionDenied { .. }) if reader == student => {}
                Err(AgentError::UnknownStream { .. }) if reader != student => {}
                other => return Err(format!("{reader} read submission {}: {other:?}", info.no)),
            }
        }
    }
    for no in o.submissions.keys() {
        ensure!(
            streams.iter().any(|s| s.no == *no),
            "acknowledged submission {no} lost"
        );
    }
    let page = agent
        .fetch(&teacher, bundle, Some(&Default::default()), ALL)
        .map_err(|e| format!("fetch: {e}"))?;
    ensure!(
        page.items.len() >= o.submissions.len(),
        "the teacher's fetch misses submissions"
    );
    Ok(())
}

/// The teacher's pick: the latest submission of each student.
fn latest(agent: &Agent<SimPmem>, bundle: &BundleRef) -> BTreeMap<String, (StreamNo, Vec<u8>)> {
    let teacher = user("teacher");
    let mut latest = BTreeMap::new();
    for info in agent.list_streams(&teacher, bundle).expect("list") {
        let file = agent.read(&teacher, bundle, info.no, 0).expect("read");
        latest.insert(info.creator.user().to_owned(), (info.no, file)); // streams come in creation order
    }
    latest
}

fn scenario(mode: Mode, rounds: usize) -> common::Tally {
    let mut env = Env::new("school.example", mode, Oracle::default(), check);
    for name in ["teacher", "sam", "tia", "eve"] {
        env.agent().add_user(name).expect("add user");
    }
    let teacher = user("teacher");
    let defaults = StreamDefaults {
        creators: Creators::Users(BTreeSet::from(["sam".to_owned(), "tia".to_owned()])),
        policy: StreamPolicy::INTERNALLY_PERSISTENT_EXTERNALLY_EPHEMERAL,
        write_once: true,
    };
    let metadata = Metadata::new()
        .with("course", "databases")
        .with("due", "2021-04-26T12:00Z");
    let bundle = env
        .agent()
        .create_bundle(&teacher, "exam-1", metadata, defaults)
        .expect("bundle");
    env.oracle.lock().bundle = Some(bundle.clone());
    env.agent()
        .register_client(&teacher, "grader")
        .expect("client");
    env.agent()
        .grant(&teacher, "grader", &bundle)
        .expect("grant");
    env.agent()
        .register_client(&teacher, "mail")
        .expect("client");

    let mut expected_latest = BTreeMap::new();
    for round in 0..rounds {
        for student in ["sam", "tia"] {
            if student == "tia" && round % 2 == 1 {
                continue; // tia submits less often
            }
            let file = format!(
                "{student}'s solution, version {round}\n{}",
                "x".repeat(round * 13)
            )
            .into_bytes();
            env.oracle.lock().pending = Some((student.to_owned(), file.clone()));
            let no = env
                .agent()
                .put_discrete(&user(student), &bundle, b"solution.txt", &[&file])
                .expect("submit");
            {
                let mut o = env.oracle.lock();
                o.submissions.insert(no, (student.to_owned(), file.clone()));
                o.pending = None;
            }
            expected_latest.insert(student.to_owned(), (no, file));

            // A submission can be neither changed nor read back.
            let sealed = env.agent().append(&user(student), &bundle, no, b"late fix");
            assert!(
                matches!(sealed, Err(AgentError::StreamSealed { .. })),
                "{sealed:?}"
            );
            let read_back = env.agent().read(&user(student), &bundle, no, 0);
            assert!(
                matches!(read_back, Err(AgentError::PermissionDenied { .. })),
                "{read_back:?}"
            );
        }
        if round % 2 == 1 {
            env.restart();
        }
    }

    // Refusals, each typed and without effect.
    let before = env
        .agent()
        .list_streams(&teacher, &bundle)
        .expect("list")
        .len();
    let open_stream =
        env.agent()
            .create_stream(&user("sam"), &bundle, StreamSpec::discrete("draft"));
    assert!(
        matches!(open_stream, Err(AgentError::PermissionDenied { .. })),
        "write-once: {open_stream:?}"
    );
    let own_policy = StreamSpec::discrete("x").with_policy(StreamPolicy::PERSISTENT_SHARED);
    assert!(matches!(
        env.agent().create_stream(&user("tia"), &bundle, own_policy),
        Err(AgentError::PermissionDenied { .. })
    ));
    assert!(matches!(
        env.agent()
            .put_discrete(&user("eve"), &bundle, b"solution.txt", &[b"copied"]),
        Err(AgentError::UnknownBundle { .. })
    ));
    let (sam_latest, _) = expected_latest["sam"].clone();
    assert!(matches!(
        env.agent().delete_stream(&user("sam"), &bundle, sam_latest),
        Err(AgentError::PermissionDenied { .. })
    ));
    assert!(matches!(
        env.agent().read(&user("tia"), &bundle, sam_latest, 0),
        Err(AgentError::UnknownStream { .. })
    ));
    assert!(matches!(
        env.agent()
            .fetch(&client("teacher", "mail"), &bundle, None, ALL),
        Err(AgentError::UnknownBundle { .. })
    ));
    assert_eq!(
        env.agent()
            .list_streams(&teacher, &bundle)
            .expect("list")
            .len(),
        before
    );

    // Students see that they submitted (metadata only); the teacher's grader reads them all.
    let sams = env
        .agent()
        .list_streams(&user("sam"), &bundle)
        .expect("list");
    assert!(sams
        .iter()
        .all(|s| s.creator.user() == "sam" && s.access.is_none()));
    let graded = env
        .agent()
        .fetch(&client("teacher", "grader"), &bundle, None, ALL)
        .expect("fetch");
    assert_eq!(graded.items.len(), before);
    assert_eq!(latest(env.agent(), &bundle), expected_latest);

    // Internally persistent: the teacher acknowledging does not drop anything.
    env.agent()
        .ack(&teacher, &bundle, &graded.next)
        .expect("ack");
    let again = env
        .agent()
        .fetch(&teacher, &bundle, Some(&Default::default()), ALL)
        .expect("fetch");
    assert_eq!(again.items.len(), before);
    env.finish()
}

#[test]
fn exam_submissions_are_write_once_and_teacher_picks_latest() {
    scenario(Mode::Plain, 6);
}

#[test]
fn exam_drop_survives_reopen() {
    scenario(Mode::Reopen, 6);
}

#[test]
fn exam_drop_survives_crashes_at_fence_points() {
    let tally = scenario(Mode::Crash(Budget::default()), 6);
    eprintln!("exam crash tally: {tally:?}");
}
