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

/// Whether a user's state hides their posts in `country` (or anywhere,
/// without a country): deleted, protected, suspended, purged, or withheld
/// there. An embedded user in this state is removed from a post's JSON.
pub fn user_hides(u: &UserState, country: Option<Country>, now_ms: TimeMs) -> bool {
    u.hides_everywhere(now_ms) || withheld_in(&u.withheld, country)
}

/// Rules 1 to 4 for one post.
pub fn own_rules_allow(p: &PostView, country: Option<Country>, now_ms: TimeMs) -> bool {
    p.stored
        && !p.tombstone
        && !p.status.is_dropped()
        && !p.status.is_superseded()
        && !withheld_in(&p.status.withheld, country)
        && !user_hides(&p.author, country, now_ms)
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

/// Why a post is hidden: every clause that fails, in rules.md's order
/// (empty exactly when [`visible`] is true). For operators only (the admin
/// endpoint): the documentation forbids showing compliance events to end
/// users.
pub fn explain(f: &Facts, country: Option<Country>, now_ms: TimeMs) -> Vec<String> {
    let mut why = own_reasons(&f.post, country, now_ms, "");
    match &f.original {
        Some(q) if q.tombstone => why.push("retweets a deleted post".to_owned()),
        Some(q) if q.stored => why.extend(own_reasons(q, country, now_ms, "retweeted post: ")),
        _ => {}
    }
    why
}

fn own_reasons(p: &PostView, country: Option<Country>, now_ms: TimeMs, prefix: &str) -> Vec<String> {
    let place = country.map_or_else(|| "somewhere".to_owned(), |c| format!("in {}", c.as_str()));
    let a = &p.author;
    let on = |t: Option<super::Toggle>| t.is_some_and(|t| t.on);
    [
        (!p.stored && !p.tombstone, "not stored".to_owned()),
        (p.tombstone, "deleted".to_owned()),
        (p.status.is_dropped(), "dropped".to_owned()),
        (p.status.is_superseded(), format!("superseded by edit {}", p.status.superseded_by.unwrap_or_default())),
        (withheld_in(&p.status.withheld, country), format!("withheld {place}")),
        (on(a.deleted), "author deleted".to_owned()),
        (on(a.protected), "author protected".to_owned()),
        (on(a.suspended), "author suspended".to_owned()),
        (a.is_purged(now_ms), "author purged (deleted for 30 days)".to_owned()),
        (withheld_in(&a.withheld, country), format!("author withheld {place}")),
    ]
    .into_iter()
    .filter(|(hit, _)| *hit)
    .map(|(_, why)| format!("{prefix}{why}"))
    .collect()
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
    fn explain_is_empty_exactly_when_visible() {
        let t = |on| Some(Toggle { on, time_ms: 1 });
        let mut views = Vec::new();
        for bits in 0u32..(1 << 9) {
            let b = |i: u32| bits & (1 << i) != 0;
            let mut p = PostView { stored: b(0), tombstone: b(1), ..PostView::default() };
            p.status.dropped = t(b(2));
            p.status.superseded_by = b(3).then_some(9);
            p.status.withheld = if b(4) { vec![c("DE")] } else { vec![] };
            p.author.protected = t(b(5));
            p.author.suspended = t(b(6));
            p.author.delete_log = if b(7) { vec![(0, true)] } else { vec![] };
            p.author.withheld = if b(8) { vec![Country::ALL] } else { vec![] };
            views.push(p);
        }
        let originals: Vec<Option<PostView>> =
            std::iter::once(None).chain(views.iter().step_by(7).cloned().map(Some)).collect();
        let mut hidden = 0;
        for post in &views {
            for original in &originals {
                let f = Facts { post: post.clone(), original: original.clone() };
                for country in [None, Some(c("DE")), Some(c("FR"))] {
                    let now = crate::rules::user::PURGE_AFTER_MS;
                    let why = explain(&f, country, now);
                    assert_eq!(why.is_empty(), visible(&f, country, now), "{f:?} {country:?}: {why:?}");
                    hidden += usize::from(!why.is_empty());
                }
            }
        }
        assert!(hidden > 0);
        let mut p = stored();
        p.status.withheld = vec![c("DE")];
        assert_eq!(explain(&Facts { post: p, original: None }, Some(c("DE")), NOW), vec!["withheld in DE"]);
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
