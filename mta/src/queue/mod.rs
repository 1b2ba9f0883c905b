//! The durable spool: messages and envelopes on stable storage before the 250.
