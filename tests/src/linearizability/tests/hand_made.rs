//! Small histories whose verdict is known by construction.

use super::*;

#[test]
fn empty_history_is_linearizable() {
    let summary = check(&History::default()).expect("empty history");
    assert_eq!(summary.keys, 0);
    assert_eq!(summary.operations_checked, 0);
}

#[test]
fn sequential_register_history_is_linearizable() {
    let history = Builder::default()
        .op(1, "x", Command::Read, (0, 1), read_ok(None))
        .op(1, "x", write("a"), (2, 3), written())
        .op(2, "x", Command::Read, (4, 5), read_ok(value("a")))
        .op(
            2,
            "x",
            cas(value("a"), value("b")),
            (6, 7),
            cas_ok(true, value("a")),
        )
        .op(
            1,
            "x",
            cas(value("a"), value("c")),
            (8, 9),
            cas_ok(false, value("b")),
        )
        .op(1, "x", Command::Write(None), (10, 11), written())
        .op(2, "x", cas(None, value("d")), (12, 13), cas_ok(true, None))
        .op(2, "x", Command::Read, (14, 15), read_ok(value("d")))
        .build();
    let summary = check(&history).expect("linearizable");
    assert_eq!(summary.keys, 1);
    assert_eq!(summary.operations_checked, 8);
}

#[test]
fn concurrent_reads_may_see_either_side_of_an_overlapping_write() {
    // The write lands somewhere in [0, 10]; the reads that overlap it can be
    // ordered around it: read None at 4.5, write at 5, read "a" at 6.
    let history = Builder::default()
        .op(1, "x", write("a"), (0, 10), written())
        .op(2, "x", Command::Read, (2, 5), read_ok(None))
        .op(3, "x", Command::Read, (3, 8), read_ok(value("a")))
        .op(4, "x", Command::Read, (4, 9), read_ok(None))
        .op(5, "x", Command::Read, (11, 12), read_ok(value("a")))
        .build();
    assert_linearizable(&history);
}

#[test]
fn concurrent_cas_contenders_one_wins() {
    let history = Builder::default()
        .op(1, "x", write("0"), (0, 1), written())
        .op(
            2,
            "x",
            cas(value("0"), value("1")),
            (2, 6),
            cas_ok(true, value("0")),
        )
        .op(
            3,
            "x",
            cas(value("0"), value("2")),
            (3, 5),
            cas_ok(false, value("1")),
        )
        .op(4, "x", Command::Read, (7, 8), read_ok(value("1")))
        .build();
    assert_linearizable(&history);
}

#[test]
fn stale_read_after_a_completed_write_is_rejected() {
    let history = Builder::default()
        .op(1, "x", write("a"), (0, 1), written())
        .op(1, "x", write("b"), (2, 3), written())
        .op(2, "x", Command::Read, (4, 5), read_ok(value("a")))
        .build();
    let violation = expect_violation(&history);
    assert_eq!(violation.key, b"x");
    assert_eq!(violation.stuck.command, Command::Read);
    assert_eq!(violation.stuck.outcome, read_ok(value("a")));
}

#[test]
fn lost_acknowledged_write_is_rejected() {
    // "b" was acknowledged, yet reads that start after it keep seeing "a".
    let history = Builder::default()
        .op(1, "x", write("a"), (0, 1), written())
        .op(2, "x", Command::Read, (1, 20), read_ok(value("a")))
        .op(1, "x", write("b"), (2, 3), written())
        .op(3, "x", Command::Read, (4, 5), read_ok(value("a")))
        .op(3, "x", Command::Read, (6, 7), read_ok(value("a")))
        .build();
    let violation = expect_violation(&history);
    assert_eq!(violation.key, b"x");
    assert!(violation.window.contains(&violation.stuck));
}

#[test]
fn duplicated_cas_success_is_rejected() {
    let history = Builder::default()
        .op(1, "x", write("0"), (0, 1), written())
        .op(
            2,
            "x",
            cas(value("0"), value("1")),
            (2, 5),
            cas_ok(true, value("0")),
        )
        .op(
            3,
            "x",
            cas(value("0"), value("2")),
            (2, 5),
            cas_ok(true, value("0")),
        )
        .build();
    let violation = expect_violation(&history);
    assert!(matches!(violation.stuck.command, Command::Cas { .. }));
}

#[test]
fn refused_cas_that_saw_its_expectation_is_rejected() {
    let history = Builder::default()
        .op(1, "x", write("0"), (0, 1), written())
        .op(
            2,
            "x",
            cas(value("0"), value("1")),
            (2, 3),
            cas_ok(false, value("0")),
        )
        .build();
    expect_violation(&history);
}

#[test]
fn read_of_a_never_written_value_is_rejected() {
    let history = Builder::default()
        .op(1, "x", write("a"), (0, 1), written())
        .op(2, "x", Command::Read, (2, 3), read_ok(value("ghost")))
        .build();
    let violation = expect_violation(&history);
    assert_eq!(violation.stuck.outcome, read_ok(value("ghost")));
    assert_eq!(violation.register, value("a"));
}

#[test]
fn value_of_a_failed_write_must_never_be_seen() {
    let history = Builder::default()
        .op(1, "x", write("a"), (0, 1), Outcome::Fail)
        .op(2, "x", Command::Read, (2, 3), read_ok(value("a")))
        .build();
    expect_violation(&history);
}

#[test]
fn indeterminate_write_may_take_effect_late_or_never() {
    let late = Builder::default()
        .op(1, "x", write("a"), (0, 1), Outcome::Info)
        .op(2, "x", Command::Read, (2, 3), read_ok(None))
        .op(2, "x", Command::Read, (100, 101), read_ok(value("a")))
        .build();
    assert_linearizable(&late);

    let never = Builder::default()
        .op(1, "x", write("a"), (0, 1), Outcome::Info)
        .op(2, "x", Command::Read, (2, 3), read_ok(None))
        .op(2, "x", write("b"), (4, 5), written())
        .op(2, "x", Command::Read, (6, 7), read_ok(value("b")))
        .build();
    assert_linearizable(&never);
}

#[test]
fn indeterminate_write_cannot_take_effect_before_its_invocation() {
    let history = Builder::default()
        .op(2, "x", Command::Read, (0, 1), read_ok(value("a")))
        .op(1, "x", write("a"), (2, 3), Outcome::Info)
        .build();
    expect_violation(&history);
}

#[test]
fn indeterminate_write_takes_effect_at_most_once() {
    // Once overwritten by "b", the single application of "a" is used up.
    let history = Builder::default()
        .op(1, "x", write("a"), (0, 1), Outcome::Info)
        .op(2, "x", Command::Read, (2, 3), read_ok(value("a")))
        .op(2, "x", write("b"), (4, 5), written())
        .op(2, "x", Command::Read, (6, 7), read_ok(value("a")))
        .build();
    expect_violation(&history);
}

#[test]
fn indeterminate_cas_applies_only_when_its_expectation_holds() {
    let applied = Builder::default()
        .op(1, "x", write("0"), (0, 1), written())
        .op(2, "x", cas(value("0"), value("1")), (2, 3), Outcome::Info)
        .op(3, "x", Command::Read, (4, 5), read_ok(value("1")))
        .build();
    assert_linearizable(&applied);

    let expectation_false = Builder::default()
        .op(1, "x", write("9"), (0, 1), written())
        .op(2, "x", cas(value("0"), value("1")), (2, 3), Outcome::Info)
        .op(3, "x", Command::Read, (4, 5), read_ok(value("1")))
        .build();
    expect_violation(&expectation_false);
}

#[test]
fn failed_and_indeterminate_reads_constrain_nothing() {
    let history = Builder::default()
        .op(1, "x", write("a"), (0, 1), written())
        .op(2, "x", Command::Read, (2, 3), Outcome::Fail)
        .op(3, "x", Command::Read, (2, 3), Outcome::Info)
        .build();
    let summary = check(&history).expect("linearizable");
    assert_eq!(summary.operations_checked, 1);
}

#[test]
fn keys_are_checked_independently_and_the_bad_key_is_named() {
    let history = Builder::default()
        .op(1, "good", write("a"), (0, 1), written())
        .op(1, "bad", write("a"), (2, 3), written())
        .op(2, "good", Command::Read, (4, 5), read_ok(value("a")))
        .op(1, "bad", write("b"), (6, 7), written())
        .op(2, "bad", Command::Read, (8, 9), read_ok(value("a")))
        .build();
    let violation = expect_violation(&history);
    assert_eq!(violation.key, b"bad");
    assert!(violation.window.iter().all(|op| op.key == b"bad"));
    let report = violation.to_string();
    assert!(report.contains("key bad is not linearizable"), "{report}");
}

#[test]
fn response_that_does_not_match_its_command_is_rejected() {
    let history = Builder::default()
        .op(1, "x", Command::Read, (0, 1), written())
        .build();
    expect_violation(&history);
}
