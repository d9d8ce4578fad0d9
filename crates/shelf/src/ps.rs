//! `shelf ps`: what a running server has loaded, read from its `/api/ps`.

use anyhow::Context;
use shelf_api::shelf::ProcessList;

use crate::cli::PsArgs;
use crate::store_cmds::human_bytes;

pub async fn ps(args: PsArgs) -> anyhow::Result<()> {
    let url = format!("http://{}/api/ps", args.addr);
    let mut request = reqwest::Client::new().get(&url);
    if let Some(key) = &args.api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.with_context(|| {
        format!(
            "no shelf server answers at {} (is `shelf serve` running?)",
            args.addr
        )
    })?;
    anyhow::ensure!(
        response.status().is_success(),
        "the server at {} answered {}",
        args.addr,
        response.status()
    );
    let list: ProcessList = response
        .json()
        .await
        .context("the server's answer is not a model list")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<32} {:>10} {:>9} {:>6} {:>8}  UNTIL",
        "NAME", "MEMORY", "SLOTS", "QUEUE", "CONTEXT"
    );
    for m in &list.models {
        println!(
            "{:<32} {:>10} {:>9} {:>6} {:>8}  {}",
            m.name,
            human_bytes(m.size),
            format!("{}/{}", m.busy_slots, m.slots),
            m.queued,
            m.context_length
                .map_or_else(|| "-".into(), |c| c.to_string()),
            until(m)
        );
    }
    Ok(())
}

/// When the model unloads, in words.
fn until(m: &shelf_api::shelf::RunningModel) -> String {
    if m.loading {
        return "loading".into();
    }
    if m.pinned {
        return "pinned".into();
    }
    if m.busy_slots > 0 || m.queued > 0 {
        return "busy".into();
    }
    match m.unloads_in_seconds {
        Some(0) => "now".into(),
        Some(secs) => format!(
            "{} from now",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        ),
        None => "never".into(),
    }
}
