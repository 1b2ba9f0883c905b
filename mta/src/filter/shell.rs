//! The filter steps of the SMTP shell: each wraps one of the session's questions (sender,
//! recipient, message) so that the filters hear the outcome (`tx-mail`, `tx-rcpt`) and,
//! for a message, the data-line and commit phases run before the queue commits.
//! [`crate::server`] calls these in place of the backend. The command phases themselves
//! come from the session ([`crate::session::Action::FilterPhase`]).

use super::{SessionFilters, Verdict, result_of};
use crate::server::{Backend, MessageWriter};
use crate::session::{CheckContext, RecipientVerdict, Reply, SenderVerdict};

/// MAIL FROM, after the session's `mail-from` phase let it through: the backend, then
/// `tx-mail` with its result.
pub async fn check_sender(
    filters: &mut SessionFilters,
    backend: &dyn Backend,
    address: Option<&str>,
    ctx: &CheckContext,
) -> SenderVerdict {
    let v = backend.check_sender(address, ctx).await;
    let code = match &v {
        SenderVerdict::Accept => 250,
        SenderVerdict::Reject(r) | SenderVerdict::TempFail(r) => r.code,
    };
    filters.mail_result(address, result_of(code));
    v
}

/// RCPT TO, after the session's `rcpt-to` phase let it through: the backend, then
/// `tx-rcpt` with its result.
pub async fn check_recipient(
    filters: &mut SessionFilters,
    backend: &dyn Backend,
    address: &str,
    ctx: &CheckContext,
) -> RecipientVerdict {
    let v = backend.check_recipient(address, ctx).await;
    let code = match &v {
        RecipientVerdict::Accept { .. } => 250,
        RecipientVerdict::Reject(r) | RecipientVerdict::TempFail(r) => r.code,
    };
    filters.rcpt_result(address, result_of(code));
    v
}

/// The end of data: the data-line filters' output is written, the commit phase asked,
/// and only then is the message made durable. Any failure drops the message.
pub async fn finish_message(
    filters: &mut SessionFilters,
    mut writer: Box<dyn MessageWriter>,
) -> Result<String, Reply> {
    let filtered = match filters.message_end().await {
        Ok(f) => f,
        Err(r) => {
            writer.abort();
            filters.rollback();
            return Err(r);
        }
    };
    if let Some(bytes) = filtered
        && let Err(r) = writer.write(&bytes).await
    {
        writer.abort();
        filters.rollback();
        return Err(r);
    }
    match filters.commit().await {
        // A rewrite never comes back from `commit` (only parameterised phases get one).
        Verdict::Proceed | Verdict::Rewrite(_) => {}
        Verdict::Reject(r) | Verdict::Disconnect(r) => {
            writer.abort();
            filters.rollback();
            return Err(r);
        }
    }
    let id = writer.commit().await;
    match &id {
        Ok(_) => filters.committed(),
        Err(_) => filters.rollback(),
    }
    id
}
