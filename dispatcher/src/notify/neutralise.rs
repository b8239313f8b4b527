//! Text from the agent and from requesters, made inert in each provider's markup.
//!
//! The agent is untrusted: the ticket it works on may have prompt-injected it. Its summary,
//! its links and its output, like the task a requester typed, reach people through
//! replies, and every such piece of text goes into a reply through this module. It comes
//! out showing as the text it is and nothing more: no mention pings, no link hides where it
//! goes, no markup hides text, and nothing runs as a command (GitLab's quick actions).
//!
//! | markup | text | a link | quoted output |
//! |---|---|---|---|
//! | Slack mrkdwn | [`slack_text`] | [`slack_link`] | [`slack_code`] |
//! | GitHub and GitLab markdown | [`markdown_text`] | [`markdown_link`] | [`markdown_code`] |
//! | Jira wiki markup | [`jira_text`] | [`jira_link`] | [`jira_code`] |
//!
//! A link is checked once, when a reply is built ([`Link::new`]): only an absolute `http`
//! or `https` URL passes. Lengths are capped before escaping ([`SUMMARY_MAX`] and the
//! rest), so a cut never splits an escape in two.

use reqwest::Url;

/// The most characters of a summary (or a failure reason) a reply quotes.
pub const SUMMARY_MAX: usize = 2_000;
/// The longest link URL a reply carries; a longer one is left out, not cut.
pub const URL_MAX: usize = 2_048;
/// The most characters of a link's title.
pub const TITLE_MAX: usize = 200;
/// The most links of an agent's result a reply carries.
pub const LINKS_MAX: usize = 10;
/// The most characters of one quoted output line.
pub const LOG_LINE_MAX: usize = 500;

/// What follows every `@` in markdown: a zero-width joiner.
///
/// GitHub and GitLab find mentions (`@ann`, `@acme/security`, GitLab's `@all`) in the
/// rendered text, so a backslash before the `@` would not stop them, and wrapping each
/// mention in backticks would need each site's username grammar (GitLab's allows dots and
/// underscores, GitHub's does not) to find where a mention ends. A joiner after every `@`
/// needs no grammar, works inside link titles as well, and reads the same.
const MENTION_BREAK: &str = "@\u{200D}";

/// Characters markdown reads as markup anywhere in a line: code spans, links and images,
/// HTML and autolinks, entities (`&#64;` is an `@` the mention rule would not see), math
/// (which can colour text invisible), and the backslash itself. Escaped with a backslash.
const MARKDOWN_MARKS: &[char] = &['\\', '`', '[', ']', '(', ')', '<', '>', '&', '$'];

/// Characters Jira wiki markup reads as markup wherever they stand: links and mentions
/// (`[~accountid:…]`), tables, macros (`{code}`, `{noformat}`, `{color}`), images
/// (`!https://…!`), superscript and subscript. Escaped with a backslash.
const JIRA_MARKS: &[char] = &['[', ']', '{', '}', '|', '!', '^', '~'];

/// Jira's phrase marks (`*strong*`, `_emphasis_`, `-deleted-`, `+inserted+`, `??cite??`):
/// a phrase opens only after, and closes only before, something other than a letter or
/// digit, so a mark between two (`PAY-12`, `snake_case`) is left as it is; any other is
/// escaped.
const JIRA_PHRASE_MARKS: &[char] = &['*', '_', '-', '+', '?'];

/// What a backslash becomes in Jira: U+29F5, which looks like one. Jira has no escape for a
/// backslash (`\\` is a line break), and a bare one would escape the escape that follows it.
const JIRA_BACKSLASH: char = '\u{29F5}';

/// A link a reply may carry: an absolute `http` or `https` URL and a one-line title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    title: String,
    url: Url,
}

impl Link {
    /// A link to `url` titled `title` (the URL itself when there is none), or `None` when
    /// `url` is not one a reply may carry: it must parse as an absolute `http` or `https`
    /// URL of at most [`URL_MAX`] characters, with a host name or IPv4 address (an IPv6
    /// literal's brackets are link markup in markdown and Jira) and no user name or
    /// password (which would be published, and can make a link read as another host).
    pub fn new(title: Option<&str>, url: &str) -> Option<Self> {
        if url.len() > URL_MAX {
            return None;
        }
        let url = Url::parse(url).ok()?;
        let web = matches!(url.scheme(), "http" | "https");
        let named_host = url.host_str().is_some_and(|h| !h.starts_with('['));
        let credentials = !url.username().is_empty() || url.password().is_some();
        if !web || !named_host || credentials || url.as_str().len() > URL_MAX {
            return None;
        }
        let title = title
            .map(one_line)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| url.to_string());
        Some(Self {
            title: super::short(&title, TITLE_MAX),
            url,
        })
    }

    /// The title, one line of at most [`TITLE_MAX`] characters, not yet escaped.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The URL, parsed and normalised (ASCII, spaces and angle brackets percent-encoded).
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// The links of an agent's result that a reply carries, and how many of the others it
/// leaves out: those [`Link::new`] refuses and those past the first [`LINKS_MAX`].
pub fn agent_links(links: &[contract::Link]) -> (Vec<Link>, usize) {
    let mut kept = Vec::new();
    for link in links {
        if kept.len() == LINKS_MAX {
            break;
        }
        kept.extend(Link::new(link.title.as_deref(), &link.url));
    }
    let left_out = links.len() - kept.len();
    (kept, left_out)
}

/// A summary or a failure reason, capped at [`SUMMARY_MAX`] characters (cut with `…`).
pub fn summary(text: &str) -> String {
    super::short(text, SUMMARY_MAX)
}

/// One output line, capped at [`LOG_LINE_MAX`] characters (cut with `…`).
pub fn log_line(line: &str) -> String {
    super::short(line, LOG_LINE_MAX)
}

/// Slack mrkdwn: `&`, `<` and `>` become `&amp;`, `&lt;` and `&gt;`, Slack's own rule.
/// Every Slack token (`<!channel>`, `<!here>`, `<@U…>`, `<#C…>`, `<url|text>`) opens with a
/// `<`, so none survives. A bare `@here` does not notify: replies are not posted with
/// `link_names`.
pub fn slack_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in visible(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A Slack link, `<url|title>`: in the URL `<`, `>` and `|` are percent-encoded and `&`
/// becomes `&amp;` (Slack reads entities in the whole text); the title is [`slack_text`].
pub fn slack_link(link: &Link) -> String {
    let url = percent_encode(link.url.as_str(), &['<', '>', '|']).replace('&', "&amp;");
    format!("<{url}|{}>", slack_text(&link.title))
}

/// Output lines as a Slack code block: [`slack_text`], with a run of three backticks (which
/// would end the block) turned into `'''`.
pub fn slack_code(lines: &[String]) -> String {
    format!(
        "```{}```",
        slack_text(&lines.join("\n")).replace("```", "'''")
    )
}

/// GitHub and GitLab markdown (one function: the two read the same CommonMark and
/// mentions).
///
/// - `\`, `` ` ``, `[`, `]`, `(`, `)`, `<`, `>`, `&`, `$` are backslash-escaped
///   ([`MARKDOWN_MARKS`]), and `!` before `[`: no link, image, code span, HTML, entity or
///   math survives. Emphasis, headings and lists are left alone: they style text but can
///   neither hide it nor fake a link.
/// - Every `@` is followed by a zero-width joiner ([`MENTION_BREAK`] says why), so no
///   `@user`, `@org/team`, `@all` or `@here` pings.
/// - A `/` that opens a line (after any spaces) is escaped: GitLab runs quick actions
///   (`/close`, `/assign`) in notes posted by the token's user, and chat-ops bots on GitHub
///   read the same syntax.
pub fn markdown_text(text: &str) -> String {
    let text = visible(text);
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut line_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '@' => out.push_str(MENTION_BREAK),
            '/' if line_start => out.push_str("\\/"),
            '!' if chars.peek() == Some(&'[') => out.push_str("\\!"),
            c if MARKDOWN_MARKS.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
        line_start = c == '\n' || (line_start && c.is_whitespace());
    }
    out
}

/// A markdown link, `[title](url)`: in the URL `(`, `)`, `[`, `]`, `<`, `>`, `\`, `` ` ``
/// and white space are percent-encoded; the title is [`markdown_text`].
pub fn markdown_link(link: &Link) -> String {
    let url = percent_encode(
        link.url.as_str(),
        &['(', ')', '[', ']', '<', '>', '\\', '`', ' ', '\t', '\n'],
    );
    format!("[{}]({url})", markdown_text(&link.title))
}

/// Output lines as a fenced markdown code block, where nothing is markup and nothing
/// mentions: a run of three backticks (which would end the block) becomes `'''`, and a line
/// that starts with `/` gets a space before it (GitLab's older quick-action scanner, which
/// finds code blocks by a pattern of its own, could be led to read it as a command).
pub fn markdown_code(lines: &[String]) -> String {
    let text = visible(&lines.join("\n")).replace("```", "'''");
    let quoted: Vec<String> = text
        .split('\n')
        .map(|line| {
            if line.starts_with('/') {
                format!(" {line}")
            } else {
                line.to_string()
            }
        })
        .collect();
    format!("```\n{}\n```", quoted.join("\n"))
}

/// Jira wiki markup, escaped with backslashes.
///
/// - `[`, `]`, `{`, `}`, `|`, `!`, `^`, `~` always ([`JIRA_MARKS`]): no link, mention
///   (`[~accountid:…]`), macro (`{code}`, `{noformat}`), table or image survives.
/// - `*`, `_`, `-`, `+`, `?` unless between two letters or digits ([`JIRA_PHRASE_MARKS`]),
///   and `#` when it opens a line (a numbered list).
/// - A backslash becomes `⧵` ([`JIRA_BACKSLASH`] says why).
pub fn jira_text(text: &str) -> String {
    let chars: Vec<char> = visible(text).chars().collect();
    let mut out = String::with_capacity(chars.len() + chars.len() / 4);
    let mut line_start = true;
    for (i, &c) in chars.iter().enumerate() {
        let in_word = i > 0
            && chars[i - 1].is_ascii_alphanumeric()
            && chars.get(i + 1).is_some_and(char::is_ascii_alphanumeric);
        let escape = JIRA_MARKS.contains(&c)
            || (JIRA_PHRASE_MARKS.contains(&c) && !in_word)
            || (c == '#' && line_start);
        if c == '\\' {
            out.push(JIRA_BACKSLASH);
        } else {
            if escape {
                out.push('\\');
            }
            out.push(c);
        }
        line_start = c == '\n' || (line_start && c.is_whitespace());
    }
    out
}

/// A Jira link, `[title|url]`: in the URL `[`, `]`, `|`, `{`, `}`, `!`, `\` and white space
/// are percent-encoded. In the title `[`, `]` and `|` become `(`, `)` and `/` (whether Jira
/// honours a backslash inside a link's title is not documented), the rest is [`jira_text`].
pub fn jira_link(link: &Link) -> String {
    let url = percent_encode(
        link.url.as_str(),
        &['[', ']', '|', '{', '}', '!', '\\', ' ', '\t', '\n'],
    );
    let title: String = link
        .title
        .chars()
        .map(|c| match c {
            '[' => '(',
            ']' => ')',
            '|' => '/',
            c => c,
        })
        .collect();
    format!("[{}|{url}]", jira_text(&title))
}

/// Output lines as a Jira `{noformat}` block, inside which only `{noformat}` is markup: any
/// `{noformat` (in any case) gets a space after its brace.
pub fn jira_code(lines: &[String]) -> String {
    const MACRO: &str = "{noformat";
    let text = visible(&lines.join("\n"));
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        out.push(c);
        let opens_macro = text
            .get(i..i + MACRO.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(MACRO));
        if opens_macro {
            out.push(' ');
        }
    }
    format!("{{noformat}}\n{out}\n{{noformat}}")
}

/// `text` without what a reader cannot see or that shows it in another order than it is:
/// control characters other than line breaks and tabs (`\r\n` and a lone `\r` become `\n`)
/// and the bidirectional marks, embeddings, overrides and isolates.
fn visible(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .map(|c| if c == '\r' { '\n' } else { c })
        .filter(|&c| {
            let bidi = matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            let control = c.is_control() && c != '\n' && c != '\t';
            !bidi && !control
        })
        .collect()
}

/// A title on one line: [`visible`], with line breaks and tabs as spaces, trimmed.
fn one_line(text: &str) -> String {
    visible(text)
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `url` (ASCII, as [`Url`] serialises it) with each of `special` as `%XX`.
fn percent_encode(url: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        if special.contains(&c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The summary of the issue: a mass mention, a fake link, a Jira macro.
    const SUMMARY: &str = "<!channel> @here @all [x](javascript:alert(1)) {code}";
    /// The link of the issue, whose URL closes Slack's link and opens a mention.
    const SLACK_BREAKOUT: &str = "https://ok.example|Click here> <!channel> <https://ok.example";

    fn link(title: Option<&str>, url: &str) -> Link {
        Link::new(title, url).unwrap_or_else(|| panic!("{url} is a link a reply may carry"))
    }

    #[test]
    fn slack_text_escapes_its_three_control_characters() {
        assert_eq!(
            slack_text(SUMMARY),
            "&lt;!channel&gt; @here @all [x](javascript:alert(1)) {code}"
        );
        assert_eq!(
            slack_text("<!here> <@U024BE7LH> <#C024BE7LR|general> <!subteam^S012> &lt;"),
            "&lt;!here&gt; &lt;@U024BE7LH&gt; &lt;#C024BE7LR|general&gt; &lt;!subteam^S012&gt; &amp;lt;"
        );
        assert_eq!(
            slack_text(SLACK_BREAKOUT),
            "https://ok.example|Click here&gt; &lt;!channel&gt; &lt;https://ok.example"
        );
    }

    #[test]
    fn markdown_text_escapes_links_html_and_code_and_breaks_every_mention() {
        assert_eq!(
            markdown_text(SUMMARY),
            "\\<!channel\\> @\u{200D}here @\u{200D}all \\[x\\]\\(javascript:alert\\(1\\)\\) {code}"
        );
        assert_eq!(
            markdown_text("@ann @acme/security-team @channel"),
            "@\u{200D}ann @\u{200D}acme/security-team @\u{200D}channel"
        );
        assert_eq!(
            markdown_text("![pixel](https://evil.example/p.png) <img src=x> `x` &#64;all $\\color{white}{hidden}$"),
            "\\!\\[pixel\\]\\(https://evil.example/p.png\\) \\<img src=x\\> \\`x\\` \\&#64;all \\$\\\\color{white}{hidden}\\$"
        );
        assert_eq!(
            markdown_text("\\[x](y)"),
            "\\\\\\[x\\]\\(y\\)",
            "a backslash of the agent's own does not undo the escape after it"
        );
    }

    #[test]
    fn markdown_text_escapes_a_slash_that_opens_a_line_so_no_quick_action_runs() {
        assert_eq!(
            markdown_text("/close\ndone; see a/b\n  /label ~bug\r\n/shrug"),
            "\\/close\ndone; see a/b\n  \\/label ~bug\n\\/shrug"
        );
    }

    #[test]
    fn jira_text_escapes_links_mentions_macros_images_and_phrases_but_not_words() {
        assert_eq!(
            jira_text(SUMMARY),
            "<\\!channel> @here @all \\[x\\](javascript:alert(1)) \\{code\\}"
        );
        assert_eq!(
            jira_text("[~accountid:5b10ac8d82e05b22cc7d4ef5] {noformat} !https://evil.example/p.png! || a |"),
            "\\[\\~accountid:5b10ac8d82e05b22cc7d4ef5\\] \\{noformat\\} \\!https://evil.example/p.png\\! \\|\\| a \\|"
        );
        assert_eq!(
            jira_text("*bold* _em_ -del- +ins+ ^sup^ ~sub~ ??cite??"),
            "\\*bold\\* \\_em\\_ \\-del\\- \\+ins\\+ \\^sup\\^ \\~sub\\~ \\?\\?cite\\?\\?"
        );
        assert_eq!(
            jira_text("# one\nfix PAY-12 in snake_case, issue #4"),
            "\\# one\nfix PAY-12 in snake_case, issue #4"
        );
        assert_eq!(
            jira_text("\\[x] \\\\"),
            "\u{29F5}\\[x\\] \u{29F5}\u{29F5}",
            "a backslash of the agent's own neither escapes nor breaks a line"
        );
    }

    #[test]
    fn invisible_and_reordering_characters_are_dropped() {
        let sneaky = "ok\u{202E}txt.exe\u{2066}\u{7}\u{1B}[31m";
        assert_eq!(slack_text(sneaky), "oktxt.exe[31m");
        assert_eq!(markdown_text(sneaky), "oktxt.exe\\[31m");
    }

    #[test]
    fn only_absolute_web_urls_make_links() {
        for refused in [
            SLACK_BREAKOUT,
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "mailto:ann@example.com",
            "/relative/path",
            "//ok.example/protocol-relative",
            "ftp://ok.example/file",
            "https://user:secret@ok.example/",
            "https://ok.example@evil.example/",
            "https://[::1]/",
            "",
        ] {
            assert_eq!(Link::new(None, refused), None, "{refused}");
        }
        let long = format!("https://ok.example/{}", "a".repeat(URL_MAX));
        assert_eq!(
            Link::new(None, &long),
            None,
            "a URL over the cap is left out, not cut"
        );
        let fine = link(None, "HTTPS://OK.example/pr/1");
        assert_eq!(fine.url().as_str(), "https://ok.example/pr/1");
        assert_eq!(fine.title(), "https://ok.example/pr/1", "no title: the URL");
    }

    #[test]
    fn link_titles_are_one_line_and_capped() {
        let titled = link(Some(" PR\n/close\t#9 "), "https://ok.example/");
        assert_eq!(titled.title(), "PR /close #9");
        let long = link(Some(&"t".repeat(500)), "https://ok.example/");
        assert_eq!(
            long.title().chars().count(),
            TITLE_MAX + 1,
            "{}",
            long.title()
        );
        assert!(long.title().ends_with('…'));
    }

    #[test]
    fn link_markup_in_a_url_is_percent_encoded_for_each_provider() {
        let tricky = link(
            Some("<!here> [t](x) |a] {code}"),
            "https://ok.example/a|b>c<d?q=(x)|[y]&z=1`",
        );
        assert_eq!(
            slack_link(&tricky),
            "<https://ok.example/a%7Cb%3Ec%3Cd?q=(x)%7C[y]&amp;z=1`|&lt;!here&gt; [t](x) |a] {code}>"
        );
        assert_eq!(
            markdown_link(&tricky),
            "[\\<!here\\> \\[t\\]\\(x\\) |a\\] {code}](https://ok.example/a|b%3Ec%3Cd?q=%28x%29|%5By%5D&z=1%60)"
        );
        assert_eq!(
            jira_link(&tricky),
            "[<\\!here> (t)(x) /a) \\{code\\}|https://ok.example/a%7Cb%3Ec%3Cd?q=(x)%7C%5By%5D&z=1`]"
        );
    }

    #[test]
    fn an_agent_result_keeps_at_most_ten_good_links_and_counts_the_rest() {
        let mut links = vec![
            contract::Link {
                title: Some("bad".into()),
                url: SLACK_BREAKOUT.into(),
            },
            contract::Link {
                title: None,
                url: "javascript:alert(1)".into(),
            },
        ];
        links.extend((0..12).map(|n| contract::Link {
            title: None,
            url: format!("https://ok.example/{n}"),
        }));
        let (kept, left_out) = agent_links(&links);
        assert_eq!(kept.len(), LINKS_MAX);
        assert_eq!(kept[0].url().as_str(), "https://ok.example/0");
        assert_eq!(left_out, 4, "two refused, two past the cap");
    }

    #[test]
    fn quoted_output_cannot_close_its_block() {
        let lines = vec![
            "```".to_string(),
            "/close".to_string(),
            "{NOFORMAT}{noformat:title=x}".to_string(),
            "<!channel> @all".to_string(),
        ];
        assert_eq!(
            slack_code(&lines),
            "```'''\n/close\n{NOFORMAT}{noformat:title=x}\n&lt;!channel&gt; @all```"
        );
        assert_eq!(
            markdown_code(&lines),
            "```\n'''\n /close\n{NOFORMAT}{noformat:title=x}\n<!channel> @all\n```"
        );
        assert_eq!(
            jira_code(&lines),
            "{noformat}\n```\n/close\n{ NOFORMAT}{ noformat:title=x}\n<!channel> @all\n{noformat}"
        );
    }

    #[test]
    fn summaries_are_capped_at_a_char_boundary() {
        let long = "é".repeat(SUMMARY_MAX + 10);
        let capped = summary(&long);
        assert_eq!(capped.chars().count(), SUMMARY_MAX + 1);
        assert!(capped.ends_with("é…"));
        assert_eq!(summary("short"), "short");
    }

    /// Attacks on one markup or another, each of them tried on all.
    pub(crate) const HOSTILE: &[&str] = &[
        SUMMARY,
        SLACK_BREAKOUT,
        "<!channel> <!here> <!everyone> <!here|here> <@U024BE7LH> <#C024BE7LR|general>",
        "<!subteam^S012|@security> <!date^1392734382^{date}|x> &lt;!channel&gt;",
        "@here @channel @all @everyone @ann @acme/security-team &#64;all",
        "[x](javascript:alert(1)) ![p](https://evil.example/p.png) [r]: https://evil.example",
        "<img src=x onerror=alert(1)> <details><summary>ok</summary>hidden</details> <!-- x -->",
        "`code` ```fence``` ~~~ $\\color{white}{hidden}$",
        "\\[x](y) \\\\[x](y) \\<!channel>",
        "/close\n/label ~bug\n  /assign @ann\r\n/shrug\r/merge",
        "{code}x{code} {noformat} {NOFORMAT} {color:white}hidden{color} {quote}",
        "[~accountid:5b10ac8d82e05b22cc7d4ef5] [~bob] !https://evil.example/p.png!",
        "*b* _e_ -d- +i+ ^s^ ~s~ ??c?? || t || # x\n* y\n- z\n----",
        "ok\u{202E}exe.txt\u{2066}\u{1B}[31m\u{0}",
    ];

    /// How many of `c` in `text` are not escaped (not after an odd run of backslashes).
    pub(crate) fn unescaped(text: &str, c: char) -> usize {
        let mut backslashes = 0;
        let mut count = 0;
        for x in text.chars() {
            if x == c && backslashes % 2 == 0 {
                count += 1;
            }
            backslashes = if x == '\\' { backslashes + 1 } else { 0 };
        }
        count
    }

    /// Whether some `@` in `text` is not followed by the mention break.
    pub(crate) fn live_at(text: &str) -> bool {
        text.replace(MENTION_BREAK, "").contains('@')
    }

    /// Whether a line of `text` opens with a `/` (after spaces): a quick action.
    pub(crate) fn slash_line(text: &str) -> bool {
        text.lines().any(|l| l.trim_start().starts_with('/'))
    }

    #[test]
    fn no_hostile_text_comes_out_as_live_markup_in_any_provider() {
        for &h in HOSTILE {
            let slack = slack_text(h);
            assert!(!slack.contains(['<', '>']), "{h:?} -> {slack:?}");
            let md = markdown_text(h);
            for c in MARKDOWN_MARKS.iter().filter(|&&c| c != '\\') {
                assert_eq!(unescaped(&md, *c), 0, "{c} in {h:?} -> {md:?}");
            }
            assert!(!live_at(&md) && !slash_line(&md), "{h:?} -> {md:?}");
            let jira = jira_text(h);
            for c in JIRA_MARKS {
                assert_eq!(unescaped(&jira, *c), 0, "{c} in {h:?} -> {jira:?}");
            }
            for c in ['*', '_', '+', '?'] {
                assert_eq!(unescaped(&jira, c), 0, "{c} in {h:?} -> {jira:?}");
            }
            assert!(!jira.contains("[~"), "{h:?} -> {jira:?}");
        }
    }

    #[test]
    fn no_hostile_title_or_url_breaks_out_of_its_link() {
        for &h in HOSTILE {
            let url = format!("https://ok.example/{h}");
            let links = [
                Link::new(Some(h), "https://ok.example/"),
                Link::new(None, &url),
            ];
            for link in links.iter().flatten() {
                let slack = slack_link(link);
                assert_eq!(slack.matches('<').count(), 1, "{h:?} -> {slack:?}");
                assert_eq!(slack.matches('>').count(), 1, "{h:?} -> {slack:?}");
                assert!(slack.starts_with("<https://ok.example/") && slack.ends_with('>'));
                let md = markdown_link(link);
                for c in ['[', ']', '(', ')'] {
                    assert_eq!(unescaped(&md, c), 1, "{c} in {h:?} -> {md:?}");
                }
                // A URL may hold an `@` (`/@here`): GitHub finds mentions in text only.
                let title = md.rfind("](https://ok.example/").map(|end| &md[..end]);
                assert!(title.is_some_and(|t| !live_at(t)), "{h:?} -> {md:?}");
                let jira = jira_link(link);
                for c in ['[', ']', '|'] {
                    assert_eq!(unescaped(&jira, c), 1, "{c} in {h:?} -> {jira:?}");
                }
                assert!(jira.contains("|https://ok.example/"), "{jira:?}");
            }
        }
    }

    #[test]
    fn no_hostile_output_line_leaves_its_code_block() {
        let lines: Vec<String> = HOSTILE.iter().map(|h| h.to_string()).collect();
        let slack = slack_code(&lines);
        assert_eq!(slack.matches("```").count(), 2, "{slack}");
        assert!(!slack.contains(['<', '>']), "{slack}");
        let md = markdown_code(&lines);
        assert_eq!(md.matches("```").count(), 2, "{md}");
        assert!(!md.lines().any(|l| l.starts_with('/')), "{md}");
        let jira = jira_code(&lines).to_lowercase();
        assert_eq!(jira.matches("{noformat}").count(), 2, "{jira}");
    }
}
