//! `GET /api/ps`: the models loaded now, for `shelf ps`.

use std::time::SystemTime;

use axum::extract::State;
use axum::Json;
use shelf_api::shelf::{ProcessList, RunningModel};

use crate::AppState;

pub async fn ps(State(state): State<AppState>) -> Json<ProcessList> {
    let now = SystemTime::now();
    let models = state
        .host
        .status()
        .into_iter()
        .filter(|m| crate::auth::may_see(&m.name))
        .map(|m| RunningModel {
            model: m.name.clone(),
            name: m.name,
            size: m.bytes,
            size_vram: 0,
            expires_at: m
                .unloads_in
                .map(|d| humantime::format_rfc3339_seconds(now + d).to_string()),
            context_length: m.context_length,
            slots: m.slots,
            busy_slots: m.busy,
            queued: m.queued,
            loading: m.loading,
            pinned: m.pinned,
            unloads_in_seconds: m.unloads_in.map(|d| d.as_secs()),
            // Process ids are for the box's operator, not every key holder.
            pid: crate::auth::grant()
                .is_none_or(|key| key.allows(shelf_keys::Scope::Admin))
                .then_some(m.pid)
                .flatten(),
        })
        .collect();
    Json(ProcessList { models })
}
