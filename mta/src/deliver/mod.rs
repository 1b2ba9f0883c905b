//! Delivery agents: LMTP, maildir, mbox, mda and relay.
