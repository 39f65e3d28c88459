//! Regression: a store bug found by the daemon's tests (and by the property
//! test): a `user_delete`/`user_undelete` that is stale for the toggle is
//! still part of the delete history (the 30-day purge is computed from the
//! whole history), but the store saved a user only when the toggle changed,
//! so the history entry was lost when the stale event came alone in its
//! batch, and the final state depended on batch boundaries. Fixed in
//! `rules/user.rs` (`apply_delete` counts a new history entry as a change).

use complyd::event::UserEvent;
use complyd::store::{self, Timed};

#[test]
fn a_stale_delete_alone_in_its_batch_is_kept_in_the_delete_history() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("s.db").display());
    let mut st = store::open(&url).unwrap();
    let undelete = Timed { time_ms: 2_000, event: UserEvent::Undelete { user_id: 5 } };
    let delete = Timed { time_ms: 1_000, event: UserEvent::Delete { user_id: 5 } };
    st.apply_user(std::slice::from_ref(&undelete), &[]).unwrap();
    st.apply_user(std::slice::from_ref(&delete), &[]).unwrap();

    let other = format!("sqlite:{}", dir.path().join("t.db").display());
    let mut one_batch = store::open(&other).unwrap();
    one_batch.apply_user(&[undelete, delete], &[]).unwrap();

    let a = author_log(&dir.path().join("s.db"));
    let b = author_log(&dir.path().join("t.db"));
    assert_eq!(a, b, "the delete history depends on batch boundaries");
}

fn author_log(db: &std::path::Path) -> Option<String> {
    let c = complyd::store::sqlite::connect(db.to_str().unwrap()).unwrap();
    c.query_row("SELECT delete_log FROM user_state WHERE id = 5", [], |r| r.get(0)).unwrap()
}
