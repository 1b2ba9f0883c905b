//! The small commands: RSET, QUIT, HELP (RFC 5321 §4.1.1.5, §4.1.1.10, §4.1.1.8).
//! NOOP, VRFY (252, never disclosing) and EXPN (502) are answered in the dispatcher.

use super::{Action, FilterPhase, Mode, Session, reply};

impl Session {
    pub(super) fn rset(&mut self, args: Option<&str>) {
        if self.refuse_args(args) {
            return;
        }
        if self.helo.is_none() {
            return self.reply(reply::bad_sequence());
        }
        self.filter_phase(FilterPhase::Rset, String::new());
    }

    pub(super) fn rset_proceed(&mut self) {
        self.abort_message();
        self.tx = None;
        self.mode = Mode::Command;
        self.reply(reply::reset());
    }

    pub(super) fn quit(&mut self, args: Option<&str>) {
        if self.refuse_args(args) {
            return;
        }
        self.filter_phase(FilterPhase::Quit, String::new());
    }

    pub(super) fn quit_proceed(&mut self) {
        self.abort_message();
        self.out.push_back(Action::Reply(reply::bye()));
        self.out.push_back(Action::Close);
        self.log("smtp disconnected reason=quit".into());
        self.closed = true;
    }

    pub(super) fn help(&mut self, args: Option<&str>) {
        if self.refuse_args(args) {
            return;
        }
        self.reply(reply::help());
    }
}
