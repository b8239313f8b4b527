//! Who may start an agent in a project, and act on its jobs later, per source
//! (`projects.<name>.access`):
//!
//! | source | who passes (defaults) |
//! |---|---|
//! | Slack | a listed user, a member of a listed user group, anyone in a listed channel, an admin (`sources.slack.admins`); with nothing listed, everyone in the workspace |
//! | GitHub | an actor whose role on the repository is at least `min_permission` (`write`) |
//! | GitLab | a member whose access level in the project is at least `min_access_level` (30, Developer) |
//! | Jira | a listed account, a member of a listed group; with nothing listed, every licensed user of the site (a service desk customer only if listed) |
//!
//! Bots and apps pass only when the source's `bots` lists them, and a bot's comment never
//! does (agentsmith's own replies are bots' comments). The provider's answers come from
//! [`super::membership`]. A refusal is counted (`agentsmith_triggers_refused_total`),
//! logged with the actor, and answered where the trigger came from; it queues nothing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::info;

use super::membership::{Directory, LookupError};
use super::Source;
use crate::context::{AppState, Context};
use crate::settings::agents::{AccessSettings, GithubPermission, GITLAB_DEVELOPER};
use crate::settings::Settings;

/// What kind of account acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// A person with an account on the provider.
    Person,
    /// A bot or an app (GitHub `Bot`, a Slack `bot_id`, a GitLab bot user, a Jira app).
    Bot,
    /// A Jira Service Management customer: a portal account, not a user of the site.
    Customer,
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The id the provider's API knows them by: a Slack user or bot id, a GitHub login, a
    /// GitLab user id, a Jira account id.
    pub id: String,
    /// A name to address them by and log (login, username, display name).
    pub name: String,
    /// Person, bot or customer.
    pub kind: ActorKind,
}

impl Actor {
    /// A person.
    pub fn person(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            kind: ActorKind::Person,
        }
    }
}

/// What a trigger or action asks to be checked.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Where it came from.
    pub source: Source,
    /// The project whose rules apply.
    pub project: &'a str,
    /// The repository (GitHub) or project path (GitLab) it happened in; empty otherwise.
    pub scope: &'a str,
    /// Who; `None` when the delivery does not say.
    pub actor: Option<&'a Actor>,
    /// The Slack channel it was typed in.
    pub channel: Option<&'a str>,
    /// Whether it is a comment (a bot's comment never passes).
    pub comment: bool,
}

/// Why a trigger was refused: the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A bot or app that is not listed: ignored, never answered.
    Bot,
    /// The actor does not pass the project's rules.
    NotAllowed,
    /// The provider could not be asked (Slack only; the other sources answer 503).
    Unchecked,
}

impl Why {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Bot => "bot",
            Why::NotAllowed => "not_allowed",
            Why::Unchecked => "unchecked",
        }
    }
}

/// A refusal: why, and what rule was not met, phrased to follow "it needs" or to stand
/// after "Sorry, <name>:".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The kind of refusal.
    pub why: Why,
    /// The rule not met (`the write role on acme/shop, and you have read`).
    pub reason: String,
}

impl Refusal {
    fn bot(reason: String) -> Self {
        Self {
            why: Why::Bot,
            reason,
        }
    }

    fn not_allowed(reason: String) -> Self {
        Self {
            why: Why::NotAllowed,
            reason,
        }
    }

    /// A refusal because the provider could not be asked.
    pub fn unchecked(error: &LookupError) -> Self {
        Self {
            why: Why::Unchecked,
            reason: format!("I could not ask who may ({error}); please try again in a minute"),
        }
    }

    /// The polite answer to `actor` for `doing` (`start an agent here`, `cancel abc123`).
    pub fn answer(&self, actor: Option<&Actor>, doing: &str) -> String {
        let name = actor.map_or("", |a| a.name.as_str());
        let sorry = if name.is_empty() {
            "Sorry".to_string()
        } else {
            format!("Sorry, {name}")
        };
        match self.why {
            Why::Unchecked => format!("{sorry}: I can't {doing} just now: {}.", self.reason),
            _ => format!(
                "{sorry}: I can't {doing} for you: it needs {}.",
                self.reason
            ),
        }
    }
}

/// What the check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Refused, and why.
    Refused(Refusal),
}

/// Checks `ask` against its project's rules, asking the provider when a rule needs it.
/// `Err` when the provider could not be asked: neither allowed nor refused.
pub async fn check(ctx: &Context, ask: &Ask<'_>) -> Result<Verdict, LookupError> {
    verdict(&ctx.settings, &ctx.directory, ask).await
}

/// [`check`] with the settings and the directory of answers it asks through.
async fn verdict(
    settings: &Settings,
    directory: &Directory,
    ask: &Ask<'_>,
) -> Result<Verdict, LookupError> {
    let Some(project) = settings.projects.get(ask.project) else {
        return Ok(Verdict::Refused(Refusal::not_allowed(format!(
            "a project named {}",
            ask.project
        ))));
    };
    let access = &project.access;
    if let Some(actor) = ask.actor.filter(|a| a.kind == ActorKind::Bot) {
        return Ok(bot_verdict(access, ask, actor));
    }
    match ask.source {
        Source::Slack => slack(settings, directory, access, ask).await,
        Source::Github => github(settings, directory, access, ask).await,
        Source::Gitlab => gitlab(settings, directory, access, ask).await,
        Source::Jira => jira(settings, directory, access, ask).await,
    }
}

/// A bot passes only when listed, and never by a comment.
fn bot_verdict(access: &AccessSettings, ask: &Ask<'_>, bot: &Actor) -> Verdict {
    let (listed, key) = match ask.source {
        Source::Slack => (&access.slack.bots, "slack.bots"),
        Source::Github => (&access.github.bots, "github.bots"),
        Source::Gitlab => (&access.gitlab.bots, "gitlab.bots"),
        Source::Jira => (&access.jira.bots, "jira.bots"),
    };
    let is_listed = listed
        .iter()
        .any(|b| b.eq_ignore_ascii_case(&bot.id) || b.eq_ignore_ascii_case(&bot.name));
    match (is_listed, ask.comment) {
        (true, false) => Verdict::Allowed,
        (true, true) => Verdict::Refused(Refusal::bot(
            "a person: a bot's comment never starts a job".into(),
        )),
        (false, _) => Verdict::Refused(Refusal::bot(format!(
            "a person, or a bot listed in projects.{}.access.{key}",
            ask.project
        ))),
    }
}

/// Slack: an admin, a listed user, anyone in a listed channel, a member of a listed group;
/// everyone when nothing is listed.
async fn slack(
    settings: &Settings,
    directory: &Directory,
    access: &AccessSettings,
    ask: &Ask<'_>,
) -> Result<Verdict, LookupError> {
    let rules = &access.slack;
    let user = ask.actor.map_or("", |a| a.id.as_str());
    let admin = settings.sources.slack.admins.iter().any(|a| a == user);
    let listed = rules.users.iter().any(|u| u == user);
    let in_channel = ask
        .channel
        .is_some_and(|c| rules.channels.iter().any(|allowed| allowed == c));
    if rules.is_open() || admin || listed || in_channel {
        return Ok(Verdict::Allowed);
    }
    for group in &rules.user_groups {
        let members = directory
            .slack_group_members(&settings.sources.slack, group)
            .await?;
        if members.iter().any(|m| m == user) {
            return Ok(Verdict::Allowed);
        }
    }
    Ok(Verdict::Refused(Refusal::not_allowed(format!(
        "you to be among the users, user groups or channels of project {} (projects.{}.access.slack)",
        ask.project, ask.project
    ))))
}

/// GitHub: the actor's role on the repository, asked of the API.
async fn github(
    settings: &Settings,
    directory: &Directory,
    access: &AccessSettings,
    ask: &Ask<'_>,
) -> Result<Verdict, LookupError> {
    let min = access.github.min_permission;
    if min == GithubPermission::None {
        return Ok(Verdict::Allowed);
    }
    let Some(actor) = ask.actor.filter(|a| !a.id.is_empty()) else {
        return Ok(Verdict::Refused(Refusal::not_allowed(format!(
            "the {} role on {}, and the delivery does not say who you are",
            min.as_str(),
            ask.scope
        ))));
    };
    let role = directory
        .github_permission(&settings.sources.github, ask.scope, &actor.id)
        .await?;
    Ok(if role >= min {
        Verdict::Allowed
    } else {
        Verdict::Refused(Refusal::not_allowed(format!(
            "the {} role on {} or higher, and you have {}",
            min.as_str(),
            ask.scope,
            if role == GithubPermission::None {
                "none".to_string()
            } else {
                role.as_str().to_string()
            }
        )))
    })
}

/// GitLab's name of an access level.
fn gitlab_role(level: u32) -> &'static str {
    match level {
        50.. => "Owner",
        40..=49 => "Maintainer",
        GITLAB_DEVELOPER..=39 => "Developer",
        20..=29 => "Reporter",
        15..=19 => "Planner",
        10..=14 => "Guest",
        5..=9 => "Minimal Access",
        _ => "no role",
    }
}

/// GitLab: the member's access level in the project, asked of the API.
async fn gitlab(
    settings: &Settings,
    directory: &Directory,
    access: &AccessSettings,
    ask: &Ask<'_>,
) -> Result<Verdict, LookupError> {
    let min = access.gitlab.min_access_level;
    if min == 0 {
        return Ok(Verdict::Allowed);
    }
    let needs = format!("the {} role in {} or higher", gitlab_role(min), ask.scope);
    let Some(actor) = ask.actor.filter(|a| !a.id.is_empty()) else {
        return Ok(Verdict::Refused(Refusal::not_allowed(format!(
            "{needs}, and the delivery does not say who you are"
        ))));
    };
    let level = directory
        .gitlab_access_level(&settings.sources.gitlab, ask.scope, &actor.id)
        .await?;
    Ok(if level >= min {
        Verdict::Allowed
    } else {
        Verdict::Refused(Refusal::not_allowed(format!(
            "{needs}, and you have {}",
            gitlab_role(level)
        )))
    })
}

/// Jira: a listed account or a member of a listed group; every licensed user when nothing
/// is listed; a service desk customer only when listed.
async fn jira(
    settings: &Settings,
    directory: &Directory,
    access: &AccessSettings,
    ask: &Ask<'_>,
) -> Result<Verdict, LookupError> {
    let rules = &access.jira;
    let refused = || {
        Verdict::Refused(Refusal::not_allowed(format!(
            "you to be among the people who may start agents in project {} (projects.{}.access.jira)",
            ask.project, ask.project
        )))
    };
    let Some(actor) = ask.actor.filter(|a| !a.id.is_empty()) else {
        return Ok(if rules.is_open() {
            Verdict::Allowed
        } else {
            refused()
        });
    };
    if rules.account_ids.iter().any(|a| a == &actor.id) {
        return Ok(Verdict::Allowed);
    }
    if actor.kind == ActorKind::Customer {
        return Ok(refused());
    }
    if rules.is_open() {
        return Ok(Verdict::Allowed);
    }
    if !rules.groups.is_empty() {
        let groups = directory
            .jira_groups(&settings.sources.jira, &actor.id)
            .await?;
        if groups.iter().any(|g| rules.groups.contains(g)) {
            return Ok(Verdict::Allowed);
        }
    }
    Ok(refused())
}

/// Labels of the refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `slack`, `github`, `gitlab` or `jira`.
    pub source: String,
    /// `bot`, `not_allowed` or `unchecked`.
    pub reason: String,
}

/// Registers `agentsmith_triggers_refused_total` in `registry` and returns it.
pub fn register(registry: &mut Registry) -> Family<RefusalLabels, Counter> {
    let refused = Family::<RefusalLabels, Counter>::default();
    registry.register(
        "triggers_refused",
        "Triggers and actions refused by the projects' access rules, by source and reason (bot, not_allowed, unchecked)",
        refused.clone(),
    );
    refused
}

/// Counts and logs a refusal, naming the actor.
pub fn record(state: &AppState, ask: &Ask<'_>, refusal: &Refusal) {
    let (actor, actor_id) = ask
        .actor
        .map_or(("", ""), |a| (a.name.as_str(), a.id.as_str()));
    info!(
        source = ask.source.as_str(),
        project = ask.project,
        actor,
        actor_id,
        reason = refusal.why.as_str(),
        rule = %refusal.reason,
        "trigger refused"
    );
    state
        .metrics
        .refused_triggers
        .get_or_create(&RefusalLabels {
            source: ask.source.as_str().to_string(),
            reason: refusal.why.as_str().to_string(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ProjectSettings;

    fn settings(access: impl FnOnce(&mut AccessSettings)) -> Settings {
        let mut settings = Settings::load_from(None, &[]).unwrap();
        let mut project = ProjectSettings {
            agent: "echo".into(),
            ..Default::default()
        };
        access(&mut project.access);
        settings.projects.insert("pay".into(), project);
        settings
    }

    fn ask<'a>(source: Source, actor: &'a Actor, comment: bool) -> Ask<'a> {
        Ask {
            source,
            project: "pay",
            scope: "acme/shop",
            actor: Some(actor),
            channel: Some("C1"),
            comment,
        }
    }

    fn bot(id: &str) -> Actor {
        Actor {
            id: id.into(),
            name: id.into(),
            kind: ActorKind::Bot,
        }
    }

    #[tokio::test]
    async fn bots_pass_only_when_listed_and_never_by_a_comment() {
        let settings = settings(|a| {
            a.github.bots = vec!["renovate[bot]".into()];
            a.github.min_permission = GithubPermission::None;
        });
        let listed = bot("renovate[bot]");
        let other = bot("spam[bot]");
        let judge = |actor, comment| {
            let settings = &settings;
            async move {
                verdict(
                    settings,
                    &Directory::new(),
                    &ask(Source::Github, actor, comment),
                )
                .await
            }
        };
        assert_eq!(judge(&listed, false).await, Ok(Verdict::Allowed));
        for (actor, comment) in [(&listed, true), (&other, false), (&other, true)] {
            let Ok(Verdict::Refused(refusal)) = judge(actor, comment).await else {
                panic!("{actor:?} passed");
            };
            assert_eq!(refusal.why, Why::Bot);
        }
    }

    #[tokio::test]
    async fn slack_is_open_until_a_list_is_set_then_users_channels_and_admins_pass() {
        let ann = Actor::person("U1", "ann");
        let open = settings(|_| {});
        assert_eq!(
            verdict(&open, &Directory::new(), &ask(Source::Slack, &ann, false)).await,
            Ok(Verdict::Allowed)
        );
        let mut closed = settings(|a| a.slack.users = vec!["U2".into()]);
        let refused = verdict(&closed, &Directory::new(), &ask(Source::Slack, &ann, false)).await;
        assert!(matches!(refused, Ok(Verdict::Refused(_))), "{refused:?}");
        closed.sources.slack.admins = vec!["U1".into()];
        assert_eq!(
            verdict(&closed, &Directory::new(), &ask(Source::Slack, &ann, false)).await,
            Ok(Verdict::Allowed)
        );
        let by_channel = settings(|a| a.slack.channels = vec!["C1".into()]);
        assert_eq!(
            verdict(
                &by_channel,
                &Directory::new(),
                &ask(Source::Slack, &ann, false)
            )
            .await,
            Ok(Verdict::Allowed)
        );
    }

    #[tokio::test]
    async fn jira_is_open_to_users_but_not_to_customers_unless_listed() {
        let customer = Actor {
            id: "qm:1".into(),
            name: "Carl".into(),
            kind: ActorKind::Customer,
        };
        let user = Actor::person("5b10", "Ann");
        let open = settings(|_| {});
        assert_eq!(
            verdict(&open, &Directory::new(), &ask(Source::Jira, &user, true)).await,
            Ok(Verdict::Allowed)
        );
        assert!(matches!(
            verdict(
                &open,
                &Directory::new(),
                &ask(Source::Jira, &customer, true)
            )
            .await,
            Ok(Verdict::Refused(_))
        ));
        let listed = settings(|a| a.jira.account_ids = vec!["qm:1".into()]);
        assert_eq!(
            verdict(
                &listed,
                &Directory::new(),
                &ask(Source::Jira, &customer, true)
            )
            .await,
            Ok(Verdict::Allowed)
        );
        assert!(matches!(
            verdict(&listed, &Directory::new(), &ask(Source::Jira, &user, true)).await,
            Ok(Verdict::Refused(_))
        ));
    }

    #[test]
    fn refusals_read_politely() {
        let ann = Actor::person("ann", "ann");
        let refusal =
            Refusal::not_allowed("the write role on acme/shop or higher, and you have read".into());
        assert_eq!(
            refusal.answer(Some(&ann), "start an agent here"),
            "Sorry, ann: I can't start an agent here for you: it needs the write role on acme/shop or higher, and you have read."
        );
        assert_eq!(gitlab_role(30), "Developer");
        assert_eq!(gitlab_role(0), "no role");
    }
}
