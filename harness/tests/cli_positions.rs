//! `replay --to` and `inspect --at` take log positions through one parser: a typo is a usage
//! error (exit 2) with the same message in both. No guest boots here.

use std::process::{Command, Output};

use writelog::LogPosition;

fn e4race(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_e4race"))
        .args(args)
        .output()
        .expect("run e4race")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory, a run directory path in it that does not exist, and an image path.
fn scratch() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| {
        let p = dir.path().join(name);
        p.to_str().expect("a UTF-8 temp path").to_string()
    };
    let (run, img) = (path("no-such-run"), path("out.img"));
    (dir, run, img)
}

#[test]
fn a_malformed_position_is_a_usage_error_in_replay_and_inspect() {
    let (_dir, dummy, out) = scratch();
    let (dummy, out) = (dummy.as_str(), out.as_str());
    for typo in ["seq:x", "sq:3"] {
        let want = match typo.parse::<LogPosition>() {
            Ok(p) => panic!("{typo} parsed as {p:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            want.contains("end, seq:N, mark:NAME, flush:N or entries:N"),
            "{want}"
        );
        let replay = e4race(&["replay", dummy, "--to", typo, "--out", out]);
        let inspect = e4race(&["inspect", dummy, "--file", "r0/f1", "--at", typo]);
        for (what, o) in [("replay --to", &replay), ("inspect --at", &inspect)] {
            assert_eq!(o.status.code(), Some(2), "{what} {typo}: {}", stderr(o));
            assert!(stderr(o).contains(&want), "{what} {typo}: {}", stderr(o));
        }
        // A usage error stops before anything is written.
        assert!(!std::path::Path::new(out).exists());
    }
}

#[test]
fn a_well_formed_position_gets_past_the_parser() {
    // A valid position on a missing log fails later, reading the log: exit 4, not 2.
    let (_dir, dummy, out) = scratch();
    let (dummy, out) = (dummy.as_str(), out.as_str());
    let replay = e4race(&[
        "replay", dummy, "--to", "seq:3", "--out", out, "--size", "4096",
    ]);
    assert_eq!(replay.status.code(), Some(4), "{}", stderr(&replay));
    let inspect = e4race(&["inspect", dummy, "--file", "r0/f1", "--at", "mark:x"]);
    assert_eq!(inspect.status.code(), Some(4), "{}", stderr(&inspect));
    for o in [&replay, &inspect] {
        assert!(
            !stderr(o).contains("is not a log position"),
            "{}",
            stderr(o)
        );
    }
}
