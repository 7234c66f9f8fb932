//! rmcp's [`SessionStore`] on `companion_sessions`: a session's initialize
//! state outlives the process, so after a restart, or on another replica,
//! the client's next call resumes it without a new `initialize`.
//!
//! rmcp calls `store` while handling the `initialize` request, inside the
//! request's task; the auth middleware runs that request inside
//! [`CALLER`], which is how the row learns who created the session.

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};

use crate::app::App;
use crate::auth::Principal;

tokio::task_local! {
    /// The principal of the HTTP request being handled.
    pub static CALLER: Principal;
}

pub struct PgSessionStore {
    pub app: Arc<App>,
    pub ttl: Duration,
}

#[async_trait::async_trait]
impl SessionStore for PgSessionStore {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let Some(value) = self.app.store.load_session(session_id).await? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_value(value)?))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let caller = CALLER.try_with(Clone::clone).unwrap_or(Principal {
            key_id: None,
            scope: self.app.scope,
        });
        let params = &state.initialize_params;
        self.app
            .store
            .save_session(
                session_id,
                &caller.scope,
                caller.key_id,
                &caller.id(),
                &serde_json::to_value(state)?,
                params.protocol_version.as_str(),
                &serde_json::to_value(&params.client_info)?,
                self.ttl,
            )
            .await?;
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.app.store.delete_session(session_id).await?;
        Ok(())
    }
}
