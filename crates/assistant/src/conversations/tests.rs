use super::*;

fn store() -> Store {
    Store::in_memory().unwrap()
}

fn chat(question: &str, answer: &str) -> Vec<Message> {
    vec![
        Message::new("user", question),
        Message::new("assistant", answer),
    ]
}

#[test]
fn a_conversation_is_kept_whole_and_titled_from_its_first_question() {
    let store = store();
    let mut messages = chat("When does the  lease\nend?", "On 30 June 2027.");
    messages[1].extra = Some(serde_json::json!({"timings": {"decode_per_s": 41.5}}));
    let id = store
        .create_conversation(None, &Settings::default(), &messages)
        .unwrap();
    let kept = store.conversation(None, id).unwrap().unwrap();
    assert_eq!(kept.title, "When does the lease end?");
    assert_eq!(kept.messages, messages);
    let listed = store.conversations(None, None, 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].messages), (id, 2));
}

#[test]
fn each_owner_sees_only_their_own() {
    let store = store();
    let mine = store
        .create_conversation(Some(1), &Settings::default(), &chat("mine", "yes"))
        .unwrap();
    store
        .create_conversation(Some(2), &Settings::default(), &chat("theirs", "yes"))
        .unwrap();
    store
        .create_conversation(None, &Settings::default(), &chat("open", "yes"))
        .unwrap();
    let ids = |owner| -> Vec<i64> {
        store
            .conversations(owner, None, 10)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect()
    };
    assert_eq!(ids(Some(1)), vec![mine]);
    assert_eq!(ids(Some(2)).len(), 1);
    assert_eq!(ids(None).len(), 1);
    assert!(store.conversation(Some(2), mine).unwrap().is_none());
    assert!(!store.delete_conversation(Some(2), mine).unwrap());
    assert!(!store
        .append_messages(None, mine, &[Message::new("user", "x")])
        .unwrap());
    assert!(store.conversation(Some(1), mine).unwrap().is_some());
}

#[test]
fn search_finds_words_of_messages_and_titles_and_forgets_deleted_ones() {
    let store = store();
    let lease = store
        .create_conversation(
            None,
            &Settings::default(),
            &chat("the lease", "ends in June"),
        )
        .unwrap();
    let titled = Settings {
        title: Some("Invoices from Brightwater".into()),
        ..Settings::default()
    };
    let invoices = store
        .create_conversation(None, &titled, &chat("how much", "EUR 4,200"))
        .unwrap();
    let found = |q: &str| -> Vec<i64> {
        store
            .conversations(None, Some(q), 10)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect()
    };
    assert_eq!(found("june"), vec![lease]);
    assert_eq!(found("brightwater"), vec![invoices]);
    assert!(found("nothing-like-it").is_empty());
    assert!(found("\" OR *").is_empty());
    let snippet = store.conversations(None, Some("june"), 10).unwrap()[0]
        .snippet
        .clone();
    assert!(snippet.unwrap().contains("June"));
    assert!(store.delete_conversation(None, lease).unwrap());
    assert!(found("june").is_empty());
    let left: i64 = store
        .db()
        .query_row(
            "SELECT count(*) FROM messages WHERE conversation = ?1",
            [lease],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn changes_touch_only_what_is_given() {
    let store = store();
    let settings = Settings {
        title: None,
        model: Some("smollm2".into()),
        system: Some("Be brief.".into()),
        temperature: Some(0.2),
    };
    let id = store
        .create_conversation(None, &settings, &chat("first", "one"))
        .unwrap();
    let rename = Settings {
        title: Some("Renamed".into()),
        system: Some(String::new()),
        ..Settings::default()
    };
    assert!(store.update_conversation(None, id, &rename, None).unwrap());
    let kept = store.conversation(None, id).unwrap().unwrap();
    assert_eq!(kept.title, "Renamed");
    assert_eq!(kept.model.as_deref(), Some("smollm2"));
    assert_eq!(kept.system, None);
    assert_eq!(kept.temperature, Some(0.2));
    assert_eq!(kept.messages.len(), 2);
    // Edit and resend: the messages are replaced, and search follows.
    let edited = chat("second question", "two");
    assert!(store
        .update_conversation(None, id, &Settings::default(), Some(&edited))
        .unwrap());
    assert_eq!(
        store.conversation(None, id).unwrap().unwrap().messages,
        edited
    );
    assert!(store
        .conversations(None, Some("first"), 10)
        .unwrap()
        .is_empty());
    assert_eq!(
        store.conversations(None, Some("second"), 10).unwrap().len(),
        1
    );
}

#[test]
fn a_client_resending_the_history_continues_its_conversation() {
    let store = store();
    let first = chat("what is due", "rent");
    let id = store
        .create_conversation(Some(7), &Settings::default(), &first)
        .unwrap();
    assert_eq!(store.continued(Some(7), &first).unwrap(), Some(id));
    assert_eq!(store.continued(Some(8), &first).unwrap(), None);
    assert_eq!(store.continued(Some(7), &first[..1]).unwrap(), None);
    let next = chat("when", "Friday");
    assert!(store.append_messages(Some(7), id, &next).unwrap());
    let whole: Vec<Message> = first.iter().chain(&next).cloned().collect();
    assert_eq!(store.continued(Some(7), &whole).unwrap(), Some(id));
    assert_eq!(store.continued(Some(7), &first).unwrap(), None);
}

#[test]
fn markdown_export_has_each_turn_under_its_role() {
    let store = store();
    let settings = Settings {
        system: Some("Answer in French.".into()),
        ..Settings::default()
    };
    let id = store
        .create_conversation(None, &settings, &chat("Bonjour?", "Bonjour!"))
        .unwrap();
    let markdown = to_markdown(&store.conversation(None, id).unwrap().unwrap());
    assert_eq!(
        markdown,
        "# Bonjour?\n\n## System\n\nAnswer in French.\n\n## User\n\nBonjour?\n\n## Assistant\n\nBonjour!\n\n"
    );
}
