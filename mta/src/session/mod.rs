//! The SMTP server session as a sans-IO state machine: bytes and events in, replies and actions out.
