//! fugu's authentication-results directives (extensions, not in OpenSMTPD):
//!
//! ```text
//! authres on|off                          (default on)
//! authres dmarc reject|quarantine|none    (default quarantine)
//! ```
//!
//! and the listener option `no-authres` (parsed with the other listener options).

use super::{P, Parser, Stmt};
use crate::authres::DmarcMode;

impl Parser<'_> {
    pub(super) fn authres(&mut self, st: &mut Stmt<'_>) -> P<()> {
        if st.eat_kw("on") {
            self.cfg.authres.enabled = true;
        } else if st.eat_kw("off") {
            self.cfg.authres.enabled = false;
        } else if st.eat_kw("dmarc") {
            self.cfg.authres.dmarc = if st.eat_kw("reject") {
                DmarcMode::Reject
            } else if st.eat_kw("quarantine") {
                DmarcMode::Quarantine
            } else if st.eat_kw("none") {
                DmarcMode::None
            } else {
                return st.err(format!(
                    "syntax error: expected `reject`, `quarantine` or `none`, found {}",
                    st.describe()
                ));
            };
        } else {
            return st.err(format!(
                "syntax error: expected `on`, `off` or `dmarc`, found {}",
                st.describe()
            ));
        }
        st.end()
    }
}
