//! "May post P be shown in country C now?" (rules.md, Visibility). The only
//! place where status state and user state meet.

use super::status::StatusState;
use super::user::UserState;
use crate::event::{Country, TimeMs};

/// What the store knows about one post, for the visibility rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostView {
    /// The post's content is stored.
    pub stored: bool,
    /// The post id is a tombstone (deleted, cascaded or purged).
    pub tombstone: bool,
    pub status: StatusState,
    /// The author's state (default when the author has no user events).
    pub author: UserState,
}

/// A post and, when it is a retweet, the post it retweets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub post: PostView,
    /// `Some` exactly when the post is a retweet.
    pub original: Option<PostView>,
}

/// Withheld in `country` (or anywhere, without a country).
pub fn withheld_in(list: &[Country], country: Option<Country>) -> bool {
    match country {
        None => !list.is_empty(),
        Some(c) => list.iter().any(|w| *w == c || w.is_everywhere()),
    }
}

/// Rules 1 to 4 for one post.
fn own_rules_allow(p: &PostView, country: Option<Country>, now_ms: TimeMs) -> bool {
    p.stored
        && !p.tombstone
        && !p.status.is_dropped()
        && !p.status.is_superseded()
        && !withheld_in(&p.status.withheld, country)
        && !p.author.hides_everywhere(now_ms)
        && !withheld_in(&p.author.withheld, country)
}

/// The visibility rule, all five clauses.
pub fn visible(f: &Facts, country: Option<Country>, now_ms: TimeMs) -> bool {
    if !own_rules_allow(&f.post, country, now_ms) {
        return false;
    }
    match &f.original {
        None => true,
        Some(q) if q.tombstone => false,
        Some(q) if q.stored => own_rules_allow(q, country, now_ms),
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Toggle;

    fn stored() -> PostView {
        PostView { stored: true, ..PostView::default() }
    }
    fn c(s: &str) -> Country {
        Country::parse(s).unwrap()
    }
    const NOW: TimeMs = 1_000;

    #[test]
    fn clause_1_stored_not_tombstone_not_dropped_not_superseded() {
        assert!(visible(&Facts { post: stored(), original: None }, None, NOW));
        assert!(!visible(&Facts::default(), None, NOW));
        let mut p = stored();
        p.tombstone = true;
        assert!(!visible(&Facts { post: p, original: None }, None, NOW));
        let mut p = stored();
        p.status.dropped = Some(Toggle { on: true, time_ms: 1 });
        assert!(!visible(&Facts { post: p, original: None }, None, NOW));
        let mut p = stored();
        p.status.superseded_by = Some(9);
        assert!(!visible(&Facts { post: p, original: None }, None, NOW));
    }

    #[test]
    fn clauses_2_and_4_withheld_country_xx_xy() {
        for list in [vec![c("DE")], vec![Country::ALL], vec![Country::DMCA]] {
            let mut p = stored();
            p.status.withheld = list.clone();
            assert!(!visible(&Facts { post: p, original: None }, Some(c("DE")), NOW), "{list:?}");
            let mut p = stored();
            p.author.withheld = list.clone();
            assert!(!visible(&Facts { post: p, original: None }, Some(c("DE")), NOW), "{list:?}");
        }
        let mut p = stored();
        p.status.withheld = vec![c("DE")];
        assert!(visible(&Facts { post: p.clone(), original: None }, Some(c("FR")), NOW));
        assert!(!visible(&Facts { post: p, original: None }, None, NOW));
    }

    #[test]
    fn clause_3_author_state() {
        let mut p = stored();
        p.author.protected = Some(Toggle { on: true, time_ms: 1 });
        assert!(!visible(&Facts { post: p, original: None }, None, NOW));
        let mut p = stored();
        p.author.delete_log = vec![(0, true)];
        assert!(!visible(&Facts { post: p.clone(), original: None }, None, crate::rules::user::PURGE_AFTER_MS));
    }

    #[test]
    fn clause_5_retweet_follows_its_original() {
        let rt = |q: PostView| Facts { post: stored(), original: Some(q) };
        assert!(visible(&rt(PostView::default()), None, NOW), "original unknown and not a tombstone");
        assert!(!visible(&rt(PostView { tombstone: true, ..PostView::default() }), None, NOW));
        let mut q = stored();
        q.status.withheld = vec![c("DE")];
        assert!(!visible(&rt(q.clone()), Some(c("DE")), NOW));
        assert!(visible(&rt(q), Some(c("FR")), NOW));
    }
}
