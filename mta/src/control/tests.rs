use super::*;

#[test]
fn full_commands_parse_and_print_back_the_same_line() {
    for line in [
        "show queue",
        "show queue 1a2b3c4d",
        "show stats",
        "show status",
        "show envelope 1a2b3c4d5e6f7081",
        "show message 1a2b3c4d",
        "schedule all",
        "remove 1a2b3c4d5e6f7081",
        "pause mta",
        "resume smtp",
        "pause mda",
        "reload",
        "log verbose",
        "log brief",
    ] {
        let req = Request::parse(line).unwrap();
        assert_eq!(req.to_string(), line);
    }
}

#[test]
fn words_may_be_abbreviated_like_smtpctl() {
    assert_eq!(Request::parse("sh q").unwrap(), Request::ShowQueue(None));
    assert_eq!(Request::parse("sh stats").unwrap(), Request::ShowStats);
    assert_eq!(
        Request::parse("sch all").unwrap(),
        Request::Schedule("all".into())
    );
    assert_eq!(
        Request::parse("pa mda").unwrap(),
        Request::Pause(Subsystem::Mda)
    );
    assert_eq!(Request::parse("log v").unwrap(), Request::Log(true));
}

#[test]
fn ambiguous_unknown_missing_and_extra_words_are_refused() {
    assert_eq!(
        Request::parse("show sta"),
        Err(ParseError::Ambiguous("sta".into(), "stats, status".into()))
    );
    assert_eq!(
        Request::parse("re all"),
        Err(ParseError::Ambiguous(
            "re".into(),
            "remove, resume, reload".into()
        ))
    );
    assert_eq!(
        Request::parse("frobnicate"),
        Err(ParseError::Unknown("frobnicate".into()))
    );
    assert_eq!(
        Request::parse("remove"),
        Err(ParseError::Missing("remove".into(), "ID|all"))
    );
    assert_eq!(
        Request::parse("reload now"),
        Err(ParseError::Extra("reload".into(), "now".into()))
    );
    assert_eq!(Request::parse("  "), Err(ParseError::Empty));
    assert_eq!(
        Request::parse("pause everything"),
        Err(ParseError::Unknown("everything".into()))
    );
}

#[test]
fn responses_round_trip_including_binary_bodies() {
    let body = b"Subject: x\r\n\r\nline\nok 3\n\x00\xff".to_vec();
    let ok = Response::Ok(body.clone());
    let wire = ok.render();
    assert!(wire.starts_with(format!("ok {}\n", body.len()).as_bytes()));
    assert_eq!(Response::decode(&wire).unwrap(), ok);

    let err = Response::Err("no such message\nor envelope".into());
    assert_eq!(err.render(), b"error no such message or envelope\n");
    assert_eq!(
        Response::decode(&err.render()).unwrap(),
        Response::Err("no such message or envelope".into())
    );
}

#[test]
fn a_response_cut_short_is_an_error_not_a_shorter_body() {
    let wire = Response::ok("0123456789").render();
    let cut = &wire[..wire.len() - 3];
    assert_eq!(
        Response::decode(cut),
        Err("response from the daemon cut short: 7 of 10 bytes".into())
    );
    assert!(Response::decode(b"ok 1").is_err());
    assert!(Response::decode(b"hello\n").is_err());
}

#[test]
fn root_and_the_daemon_user_may_do_everything_group_fugu_may_only_read() {
    let daemon = 110;
    let peer = |uid, in_fugu_group| Peer {
        uid,
        gid: 1000,
        in_fugu_group,
    };
    assert_eq!(access(peer(0, false), daemon), Access::Full);
    assert_eq!(access(peer(110, false), daemon), Access::Full);
    assert_eq!(access(peer(1000, true), daemon), Access::ReadOnly);
    assert_eq!(access(peer(65534, false), daemon), Access::None);

    let show = Request::ShowQueue(None);
    let remove = Request::Remove("all".into());
    let message = Request::ShowMessage("1a2b3c4d".into());
    assert_eq!(authorize(Access::ReadOnly, &show), Ok(()));
    assert_eq!(
        authorize(Access::ReadOnly, &remove),
        Err("permission denied")
    );
    assert_eq!(
        authorize(Access::ReadOnly, &message),
        Err("permission denied")
    );
    assert_eq!(authorize(Access::None, &show), Err("permission denied"));
    assert_eq!(authorize(Access::Full, &remove), Ok(()));
}

#[test]
fn stats_are_sorted_key_value_lines_with_human_uptime() {
    let text = render_stats(
        &[
            ("scheduler.delivery.ok", 3),
            ("queue.commit.rounds", 2),
            ("scheduler.envelope", 1),
        ],
        93784,
    );
    assert_eq!(
        text,
        "queue.commit.rounds=2\n\
         scheduler.delivery.ok=3\n\
         scheduler.envelope=1\n\
         uptime=93784\n\
         uptime.human=1d2h3m4s\n"
    );
}

#[test]
fn durations_read_like_opensmtpd_logs() {
    assert_eq!(duration_text(0), "0s");
    assert_eq!(duration_text(65), "1m5s");
    assert_eq!(duration_text(93600), "1d2h");
    assert_eq!(duration_text(4 * 86400), "4d");
}

#[test]
fn status_names_each_subsystem() {
    assert_eq!(
        render_status(true, false, false),
        "MDA paused\nMTA running\nSMTP running\n"
    );
}
