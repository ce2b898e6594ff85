"""Rendering adapter: an Edition -> one finished email body (subject, preheader, HTML, text).

Jinja2 renders ``templates/digest.html`` (autoescaped) and ``templates/digest.txt`` (plain text,
hand-written); premailer then inlines the CSS of the HTML once per content variant. Nothing here
is per subscriber: the subscriber's own links are the ASCII markers UNSUBSCRIBE_SLOT and
PREFERENCES_SLOT, which delivery replaces with ``str.replace`` (HTML-escaping the URL for the HTML
part if it can contain ``&``).

A tracked variant (NEWSLETTER_TRACK_CLICKS, issue 15) has one more marker per article,
``article_slot(ref)``, in place of each link to that article (headline, pictures, "read more",
the text part's URL), and with NEWSLETTER_TRACK_OPENS the pixel's OPEN_SLOT: delivery fills each
with that reader's own signed ``/c/`` (``/o/``) URL. An untracked variant is byte for byte what it
was before tracking existed.

Gmail clips an HTML body over 102,400 bytes, so ``render`` measures the result with the slots
filled by URLs of ``slot_url_length`` characters and, over 90 KB, renders again with shorter
excerpts, then without excerpts, then with fewer articles, until it fits; each step is reported in
``RenderedVariant.warnings``.

An empty edition renders fine (a short "no articles" body); the caller decides not to send it.
"""

from __future__ import annotations

import logging
import re
import textwrap
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from newsletter.adapters.i18n import format_long_date, is_rtl_locale, language_tag, translations
from newsletter.adapters.resources import templates_dir
from newsletter.domain import GENERAL_SECTION_KEY, Article, ArticleImage, Edition, Section
from newsletter.domain.curation import article_ref, lead_first
from newsletter.domain.errors import NewsletterError
from newsletter.domain.images import safe_image
from newsletter.domain.text import excerpt, html_to_text, one_line
from newsletter.domain.urls import is_http_url

UNSUBSCRIBE_SLOT = "__NL_UNSUBSCRIBE_URL__"
PREFERENCES_SLOT = "__NL_PREFERENCES_URL__"
OPEN_SLOT = "__NL_OPEN_URL__"
_ARTICLE_SLOT = re.compile(r"__NL_A_([0-9a-f]{6,16})__")


def article_slot(ref: str) -> str:
    """The marker of the links to article ``ref`` (``domain.curation.article_ref``) in a tracked
    variant: ASCII letters, digits and underscores only, so it is the same in the HTML (nothing to
    escape), in the text part and in quoted-printable (nothing to encode)."""
    return f"__NL_A_{ref}__"


def article_slots(text: str) -> tuple[str, ...]:
    """The article refs whose markers ``text`` holds, each once, in order of first appearance."""
    return tuple(dict.fromkeys(_ARTICLE_SLOT.findall(text)))


GMAIL_CLIP_BYTES = 102_400
BUDGET_BYTES = 92_160  # 90 KB: room left for what delivery adds and for our own estimate's error
EXCERPT_FLOOR = 100  # shorter excerpts say nothing; below this they are dropped instead
SUBJECT_TARGET = 80  # phones show about 40 characters, desktop inboxes about 80
SUBJECT_MAX = 100  # a NEWSLETTER_SUBJECT pattern may add to the headline, never past this
SUBJECT_SLACK = (
    10  # a headline this little over the target is kept whole: "deux jours de…" is worse
)
PREHEADER_HEADLINES = 3
PREHEADER_MAX = 150
TITLE_MAX = 300  # a feed can send a 60 KB "title"; nobody reads past this
AUTHOR_MAX = 120
LABEL_MAX = 120
URL_MAX = 2_048  # longer links are not real article links and would blow the size budget
TEXT_WIDTH = 72
COLUMN_PX = 552  # the content column: 600 px less the 24 px padding on each side
THUMB_PX = 112  # the thumbnail beside the other articles
ALT_MAX = 300
_C0_AND_SPACE = "".join(chr(i) for i in range(0x21))  # what URL parsers trim from both ends
# Invisible characters after the preheader stop clients from pulling body text into the preview.
PREHEADER_FILLER = "\u034f\u00a0" * 40
DEFAULT_LOCALE = "fr"


class RenderError(NewsletterError):
    """The edition cannot be rendered within the size budget or the templates are broken."""


@dataclass(frozen=True, slots=True)
class Brand:
    """What every edition says about who publishes it (``services.compose.brand_for`` builds it).

    ``web_version_base`` is ``{NEWSLETTER_BASE_URL}/archive/`` (an edition's web version is that
    plus its ISO date), or "" when the archive is off; ``signup_url`` is where a reader of a
    forwarded copy or of the archive signs up.
    """

    logo_url: str = ""
    publisher: str = ""
    postal_address: str = ""
    subject_pattern: str = ""
    web_version_base: str = ""
    signup_url: str = ""
    archive_url: str = ""  # the public list of editions; "" when the archive is unlisted or off

    def web_version_url(self, day: date) -> str:
        return f"{self.web_version_base}{day.isoformat()}" if self.web_version_base else ""


@dataclass(frozen=True, slots=True)
class RenderedVariant:
    keys: frozenset[str]  # the section keys this variant holds
    subject: str  # one line
    preheader: str
    html: str  # full document, CSS inlined, slots in place
    text: str  # plain-text part, slots in place
    warnings: tuple[str, ...]
    # Tracked variants only: the refs whose article_slot() markers the parts hold, and whether
    # the HTML ends with the open pixel (OPEN_SLOT). Untracked: () and False.
    article_refs: tuple[str, ...] = ()
    open_pixel: bool = False


@dataclass(frozen=True, slots=True)
class ImageView:
    """An article's image as the templates show it: its width and height as attributes, scaled
    to the space it fills (Outlook reads only the attributes); ``height`` is None when the source
    did not give the size, and the inline ``height:auto`` keeps the picture's own proportions."""

    url: str
    alt: str
    width: int
    height: int | None


@dataclass(frozen=True, slots=True)
class ArticleView:
    """What the templates show of one article: plain text only, a link only if http(s)."""

    title: str
    url: str  # "" when the feed's link is not a safe http(s) URL
    author: str
    excerpt: str
    dir: str  # "rtl", "ltr" or "" (inherit the document's direction)
    lang: str  # BCP 47 tag when the item's script says more than the document's lang, else ""
    image: ImageView | None = None
    lead: bool = False  # the edition's first story: a large picture and a larger headline


@dataclass(frozen=True, slots=True)
class SectionView:
    key: str
    label: str
    articles: tuple[ArticleView, ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    """How much of the edition one render attempt shows."""

    excerpt_chars: int  # 0 = no excerpts
    max_articles: int | None  # None = all


@dataclass(frozen=True, slots=True)
class Tracking:
    """What a variant counts: clicks on its article links, its opening (a pixel), or neither."""

    clicks: bool = False
    opens: bool = False

    def __bool__(self) -> bool:
        return self.clicks or self.opens


NOT_TRACKED = Tracking()


# ---------------------------------------------------------------------------------------------
# Jinja environment (shared with the web app's pages)
# ---------------------------------------------------------------------------------------------


def make_environment(templates: Path | None = None) -> jinja2.Environment:
    """The Jinja2 environment for emails and pages.

    Autoescape is on for .html/.htm/.xml and for templates from strings; .txt (and the CSS partial)
    are not escaped, so the text part never shows "&amp;". Texts go through jinja2.ext.i18n's
    new-style gettext (``_("Read more")``, ``ngettext(one, many, n)``, fields as ``%(name)s``):
    the translation is trusted, the fields are escaped. ``_``, ``ngettext`` and ``long_date`` read
    ``locale`` from the template's context (default "fr").
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates or templates_dir())),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm", "xml"),
            disabled_extensions=("txt", "css"),
            default_for_string=True,
            default=True,
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        _gettext, _ngettext, newstyle=True
    )
    env.filters["long_date"] = _long_date
    env.filters["wrap"] = wrap_text
    env.filters["underline"] = underline
    env.filters["bdi"] = isolate
    env.filters["paragraphs"] = text_paragraphs
    return env


_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_URL_TAIL = ".,;:!?)]»’”"  # punctuation that ends a sentence, not the URL before it


def text_paragraphs(text: str) -> list[Markup]:
    """Plain text as HTML paragraphs: blank lines part them, a line break stays one, and every
    http(s) URL becomes a link. Everything else is escaped: an intro with ``<b>`` shows ``<b>``."""
    paragraphs = (p.strip("\n") for p in re.split(r"\n[ \t]*\n", text))
    return [
        Markup("<br>").join(_linked_line(line) for line in paragraph.split("\n"))
        for paragraph in paragraphs
        if paragraph.strip()
    ]


def _linked_line(line: str) -> Markup:
    pieces: list[Markup] = []
    position = 0
    for match in _URL_IN_TEXT.finditer(line):
        url = match.group(0).rstrip(_URL_TAIL)
        end = match.start() + len(url)
        pieces.append(escape(line[position : match.start()]))
        link = safe_url(url)
        if link:
            pieces.append(Markup('<a class="intro-link" href="{}">{}</a>').format(link, url))
        else:
            pieces.append(escape(url))
        position = end
    pieces.append(escape(line[position:]))
    return Markup("").join(pieces)


def isolate(text: str) -> Markup:
    """``text`` escaped inside ``<bdi>``: a name in another script keeps its own direction, and
    the words around it ("Par", "By") stay where the page's direction puts them."""
    return Markup("<bdi>{}</bdi>").format(text)


@jinja2.pass_context
def _gettext(context: jinja2.runtime.Context, message: str) -> str:
    return translations(_context_locale(context)).gettext(message)


@jinja2.pass_context
def _ngettext(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
    return translations(_context_locale(context)).ngettext(singular, plural, n)


@jinja2.pass_context
def _long_date(context: jinja2.runtime.Context, value: date, locale: str | None = None) -> str:
    return format_long_date(value, locale or _context_locale(context))


def _context_locale(context: jinja2.runtime.Context) -> str:
    locale = context.get("locale")
    return locale if isinstance(locale, str) and locale else DEFAULT_LOCALE


def wrap_text(text: str, width: int = TEXT_WIDTH) -> str:
    """Plain-text paragraphs wrapped at ``width``; long words (URLs) are never split."""
    paragraphs = (p for p in text.split("\n\n") if p.strip())
    wrapped = (
        textwrap.fill(p, width=width, break_long_words=False, break_on_hyphens=False)
        for p in paragraphs
    )
    return "\n\n".join(wrapped)


def underline(text: str, char: str = "-") -> str:
    """``text`` underlined with ``char`` as long as it looks (combining marks do not count)."""
    visible = sum(1 for ch in text if not unicodedata.combining(ch))
    return f"{text}\n{char * max(visible, 3)}"


# ---------------------------------------------------------------------------------------------
# Views: the edition reduced to safe, display-ready text
# ---------------------------------------------------------------------------------------------


def safe_url(link: str) -> str:
    """``link`` if it is an absolute http(s) URL, else "" (javascript:, data:, relative ...)."""
    # Browsers drop tab/CR/LF inside URLs ("java\nscript:"), so check what they would see.
    cleaned = re.sub(r"[\t\r\n]", "", link).strip(_C0_AND_SPACE)
    if not cleaned or len(cleaned) > URL_MAX or any(ch.isspace() or ord(ch) < 32 for ch in cleaned):
        return ""
    return cleaned if is_http_url(cleaned) else ""


def _script_lang(text: str) -> str:
    """A lang tag for a right-to-left title from its first strong character's script."""
    for ch in text:
        name = unicodedata.name(ch, "")
        if name.startswith("ARABIC"):
            return "ar"
        if name.startswith("HEBREW"):
            return "he"
        if unicodedata.bidirectional(ch) in ("L", "R", "AL"):
            return ""
    return ""


def _article_text(article: Article) -> str:
    """The readable text an excerpt is cut from: the summary if any, else the content."""
    for markup in (article.summary_html, article.content_html):
        text = html_to_text(markup)
        # WordPress summaries end with " […]" / " [...]": our own "…" replaces it.
        text = re.sub(r"\s*\[(?:…|\.\.\.)\]\s*$", "", text)
        if text:
            return text
    return ""


def plain_line(text: str, limit: int) -> str:
    """A feed's title-like field as one line of text, at most ``limit`` chars.

    Feeds are inconsistent about titles: some send text, some escaped HTML ("&lt;b&gt;"), some
    raw tags. Reducing them like feed HTML keeps tags out of both parts and out of the Subject.
    """
    return excerpt(one_line(html_to_text(text)), limit)


def image_view(image: ArticleImage | None, headline: str, column: int) -> ImageView | None:
    """``image`` fitted to a column ``column`` px wide, or None when it is not fit to show.

    The sources already keep only safe pictures (``domain.images.safe_image``); the same rule runs
    again here, since an Edition can be built by any caller. Nothing is downloaded.
    """
    checked = None if image is None else safe_image(image.url, image.alt, image.width, image.height)
    if checked is None:
        return None
    shown_height = None
    if checked.width and checked.height:
        shown_height = max(round(column * checked.height / checked.width), 1)
    alt = plain_line(checked.alt, ALT_MAX) or headline
    return ImageView(url=checked.url, alt=alt, width=column, height=shown_height)


def _article_view(
    article: Article,
    excerpt_chars: int,
    document_rtl: bool,
    *,
    lead: bool = False,
    tracked: bool = False,
) -> ArticleView:
    """``tracked``: every link to the article is its article_slot() marker (only when it has a
    safe URL at all: an article without one gets no link, tracked or not)."""
    title = plain_line(article.title, TITLE_MAX)
    url = safe_url(article.link)
    if url and tracked:
        url = article_slot(article_ref(article.uid))
    if article.rtl:
        direction, lang = "rtl", _script_lang(title)
    else:
        direction, lang = ("ltr" if document_rtl else ""), ""
    return ArticleView(
        title=title,
        url=url,
        author=plain_line(article.author, AUTHOR_MAX),
        excerpt=excerpt(_article_text(article), excerpt_chars) if excerpt_chars > 0 else "",
        dir=direction,
        lang=lang,
        image=image_view(article.image, title, COLUMN_PX if lead else THUMB_PX),
        lead=lead,
    )


def section_label(section: Section, locale: str) -> str:
    """A section's name as the email shows it; the command line names it the same way."""
    # The general section is labelled in the edition's language, whatever the builder put there.
    if section.key == GENERAL_SECTION_KEY:
        return translations(locale).gettext("Other news")
    return plain_line(section.label, LABEL_MAX)


def _kept_articles(edition: Edition, limit: int | None) -> list[tuple[Section, list[Article]]]:
    """The first ``limit`` articles taken round-robin over sections, in their original order.

    Round-robin keeps each section's top stories rather than dropping the last sections whole.
    """
    if limit is None:
        return [(s, list(s.articles)) for s in edition.sections]
    ranked = sorted(
        (
            (rank, index)
            for index, s in enumerate(edition.sections)
            for rank in range(len(s.articles))
        ),
    )
    keep = set(ranked[:limit])
    kept = (
        (s, [a for rank, a in enumerate(s.articles) if (rank, index) in keep])
        for index, s in enumerate(edition.sections)
    )
    return [(s, articles) for s, articles in kept if articles]


def _headlines(edition: Edition) -> Iterator[str]:
    for article in edition.articles:
        yield plain_line(article.title, TITLE_MAX)


# ---------------------------------------------------------------------------------------------
# The renderer
# ---------------------------------------------------------------------------------------------


class Renderer:
    """Renders editions for one newsletter (title, locale); reuse it for every variant."""

    def __init__(
        self,
        *,
        title: str,
        locale: str,
        excerpt_chars: int = 400,
        templates: Path | None = None,
        slot_url_length: int = 160,
        brand: Brand | None = None,
        tracked_url_length: int = 120,
    ) -> None:
        """``slot_url_length``: what an unsubscribe or preferences URL measures at most;
        ``tracked_url_length``: what a click (``/c/``) or open (``/o/``) URL does (the base URL
        plus a token: ``links.tracked_url_length``). ``measure`` counts both."""
        self.title = one_line(title)
        self.brand = brand or Brand()
        self.locale = locale
        self.excerpt_chars = excerpt_chars
        self.slot_url_length = slot_url_length
        self.tracked_url_length = tracked_url_length
        self.environment = make_environment(templates)
        self._html_template = self.environment.get_template("digest.html")
        self._text_template = self.environment.get_template("digest.txt")
        self._document_rtl = is_rtl_locale(locale)
        # premailer options, verified against premailer 3.10's source:
        self._premailer_options: dict[str, Any] = {
            "base_url": None,  # no base_url: hrefs (and the slot markers) are never rewritten
            "keep_style_tags": True,  # the whole <style> stays, so @media rules still apply
            "strip_important": False,  # the @media overrides need !important to beat inline CSS
            "remove_classes": False,  # the @media rules select by class
            "disable_validation": True,  # mso-* and other email-only properties are kept
            "allow_network": False,  # never fetch <link rel=stylesheet> or external_styles
            "allow_loading_external_files": False,  # nor read local files named by the HTML
            "cssutils_logging_level": logging.CRITICAL,  # cssutils warns on every unknown property
            "cache_css_parsing": True,
            # Width and height attributes are the template's own (images scaled to their column,
            # Outlook reads nothing else); premailer would copy "width:100%" over them.
            "disable_basic_attributes": ["width", "height"],
        }

    # -- public ---------------------------------------------------------------------------------

    def render(
        self, edition: Edition, *, chosen: bool = False, tracking: Tracking = NOT_TRACKED
    ) -> RenderedVariant:
        """Render one content variant; called once per variant, never per subscriber.

        ``chosen``: the variant's readers picked their sections, and the footer names them.
        ``tracking``: the article links are slots for click URLs, and/or the open pixel is there.
        """
        edition = lead_first(edition)
        plan = _Plan(self.excerpt_chars, None)
        options = {"chosen": chosen, "clicks": tracking.clicks, "opens": tracking.opens}
        html = self._render_html(edition, plan, **options)
        first_size = size = self.measure(html)
        while size > BUDGET_BYTES:
            smaller = _smaller_plan(plan, size, len(edition.articles))
            if smaller is None:
                raise RenderError(
                    f"edition HTML is {_kb(size)} KB even without any article",
                    "shorten NEWSLETTER_TITLE or the templates",
                )
            plan = smaller
            html = self._render_html(edition, plan, **options)
            size = self.measure(html)
        context = self._context(edition, plan, **options)
        text = _tidy_text(self._text_template.render(context))
        return RenderedVariant(
            keys=edition.section_keys,
            subject=self.subject(edition),
            preheader=context["preheader"],
            html=html,
            text=text,
            warnings=self._budget_warnings(edition, first_size, plan, size),
            article_refs=_linked_refs(edition, html + text) if tracking.clicks else (),
            open_pixel=tracking.opens,
        )

    def web_page(self, edition: Edition, *, noindex: bool = False) -> str:
        """The edition as a web page (the archive's web version): the email's HTML without any
        personal link; its footer invites the reader to sign up instead. ``noindex`` adds the
        robots meta of an unlisted archive."""
        edition = lead_first(edition)
        plan = _Plan(self.excerpt_chars, None)
        return self._render_html(edition, plan, personal=False, noindex=noindex)

    def measure(self, html: str) -> int:
        """Bytes of ``html`` once delivery has put ``slot_url_length``-char URLs in the subscriber
        slots and ``tracked_url_length``-char ones in the click and open slots."""
        growth = sum(
            html.count(slot) * (self.slot_url_length - len(slot))
            for slot in (UNSUBSCRIBE_SLOT, PREFERENCES_SLOT)
        )
        if "__NL_A_" in html or OPEN_SLOT in html:
            growth += html.count(OPEN_SLOT) * (self.tracked_url_length - len(OPEN_SLOT))
            growth += sum(
                self.tracked_url_length - len(found.group(0))
                for found in _ARTICLE_SLOT.finditer(html)
            )
        return len(html.encode("utf-8")) + growth

    def subject(self, edition: Edition) -> str:
        """The Subject: the lead story's headline, cut on a word within SUBJECT_TARGET characters
        when it passes them by more than SUBJECT_SLACK.

        The brand is already in From, and a phone shows about 40 characters: the headline leads.
        NEWSLETTER_SUBJECT may set a pattern of {headline}, {title}, {date} and {count} (the
        settings checked its fields); the headline is then cut to what the pattern leaves, and
        the whole never passes SUBJECT_MAX. An empty edition says "{title} – {date}".
        """
        if edition.subject:  # the editors' own, exactly as written (one line)
            return one_line(edition.subject)
        when = format_long_date(edition.date, self.locale)
        _ = translations(self.locale).gettext
        headlines = list(_headlines(lead_first(edition)))
        if not headlines:
            bare = _("%(title)s – %(date)s") % {"title": self.title, "date": when}
            return excerpt(one_line(bare), SUBJECT_MAX)
        pattern = self.brand.subject_pattern or "{headline}"
        fields = {"title": self.title, "date": when, "count": str(len(headlines))}
        room = SUBJECT_TARGET - len(pattern.format(headline="", **fields))
        headline = headlines[0]
        if len(headline) > room + SUBJECT_SLACK:
            headline = excerpt(headline, max(room, SUBJECT_TARGET // 2))
        return excerpt(one_line(pattern.format(headline=headline, **fields)), SUBJECT_MAX)

    def preheader(self, edition: Edition) -> str:
        """The inbox's preview line: the headlines after the lead (the Subject already shows it);
        for a one-story edition, that story's excerpt; with none, a generic line. The editors'
        intro, when there is one, comes first: it is what they want read before the list."""
        if edition.intro:
            return excerpt(edition.intro, PREHEADER_MAX)
        articles = lead_first(edition).articles
        headlines = [plain_line(a.title, TITLE_MAX) for a in articles[1 : 1 + PREHEADER_HEADLINES]]
        if headlines:
            # TRANSLATORS: between the headlines of the preheader (the inbox's preview line)
            joined = translations(self.locale).gettext(" · ").join(headlines)
            return excerpt(joined, PREHEADER_MAX)
        if articles and (text := _article_text(articles[0])):
            return excerpt(text, PREHEADER_MAX)
        return translations(self.locale).gettext("Today’s top stories")

    # -- steps ----------------------------------------------------------------------------------

    def _render_html(self, edition: Edition, plan: _Plan, **options: bool) -> str:
        raw = self._html_template.render(self._context(edition, plan, **options))
        # Imported at the first rendering: `status`, `check` and the web pages that only read
        # the store do not load premailer, cssutils and requests.
        from premailer import Premailer

        # premailer only keeps the doctype when the source starts with lxml's spelling of it.
        inlined = Premailer(**self._premailer_options).transform(raw, pretty_print=False)
        return inlined if inlined.endswith("\n") else inlined + "\n"

    def _context(
        self,
        edition: Edition,
        plan: _Plan,
        *,
        personal: bool = True,
        chosen: bool = False,
        noindex: bool = False,
        clicks: bool = False,
        opens: bool = False,
    ) -> dict[str, Any]:
        kept = _kept_articles(edition, plan.max_articles)
        lead = kept[0][1][0] if kept else None
        sections = tuple(
            SectionView(
                key=section.key,
                label=section_label(section, self.locale),
                articles=tuple(
                    _article_view(
                        a,
                        plan.excerpt_chars,
                        self._document_rtl,
                        lead=a is lead,
                        tracked=clicks and personal,
                    )
                    for a in articles
                ),
            )
            for section, articles in kept
        )
        _ = translations(self.locale).gettext
        labels = [s.label for s in sections]
        publisher = [one_line(p) for p in (self.brand.publisher, self.brand.postal_address) if p]
        return {
            "locale": self.locale,
            "lang": language_tag(self.locale),
            "dir": "rtl" if self._document_rtl else "ltr",
            "title": self.title,
            "edition_date": edition.date,
            "preheader": self.preheader(edition),
            "intro": edition.intro,
            "preheader_filler": PREHEADER_FILLER,
            "sections": sections,
            "personal": personal,  # False: the archive's page, with no subscriber's link
            "noindex": noindex,
            # TRANSLATORS: between the sections the reader chose, in the footer
            "chosen_sections": _(", ").join(labels) if chosen and labels else "",
            "publisher_line": " · ".join(publisher),
            "unsubscribe_url": UNSUBSCRIBE_SLOT,
            "preferences_url": PREFERENCES_SLOT,
            "web_version_url": self.brand.web_version_url(edition.date),
            "signup_url": self.brand.signup_url,
            "archive_url": self.brand.archive_url,
            "site_url": safe_url(edition.site_url),
            "open_pixel_url": OPEN_SLOT if opens and personal else "",
            "brand": self.brand,
        }

    def _budget_warnings(
        self, edition: Edition, first_size: int, plan: _Plan, final_size: int
    ) -> tuple[str, ...]:
        if first_size <= BUDGET_BYTES:
            return ()
        if plan.max_articles is not None:
            action = (
                f"excerpts dropped and only {plan.max_articles} of {len(edition.articles)} "
                "articles kept"
            )
        elif plan.excerpt_chars == 0:
            action = "excerpts dropped"
        else:
            action = f"excerpts shortened to {plan.excerpt_chars} characters"
        return (
            f"edition HTML is {_kb(first_size)} KB, over the {_kb(BUDGET_BYTES)} KB budget "
            f"(Gmail clips over {_kb(GMAIL_CLIP_BYTES)} KB): {action}; now {_kb(final_size)} KB",
        )


def _smaller_plan(plan: _Plan, size: int, total_articles: int) -> _Plan | None:
    """The next, smaller rendering after one of ``size`` bytes; None when nothing is left to cut.

    Shorter excerpts first (halved down to EXCERPT_FLOOR), then none, then fewer articles: the
    article count is scaled by budget/size, which lands under the budget in one or two renders
    because the fixed part of the page (header, footer, CSS) does not shrink with it.
    """
    if plan.max_articles is None and plan.excerpt_chars > EXCERPT_FLOOR:
        return _Plan(max(plan.excerpt_chars // 2, EXCERPT_FLOOR), None)
    if plan.max_articles is None and plan.excerpt_chars > 0:
        return _Plan(0, None)
    count = total_articles if plan.max_articles is None else plan.max_articles
    if count == 0:
        return None
    return _Plan(0, min(count - 1, count * BUDGET_BYTES // size))


def _linked_refs(edition: Edition, rendered: str) -> tuple[str, ...]:
    """The refs of the edition's articles whose slots the rendered parts hold. A marker that a
    feed's own text happens to spell, for an article not in the edition, is not a slot."""
    refs = {article_ref(article.uid) for article in edition.articles}
    return tuple(ref for ref in article_slots(rendered) if ref in refs)


def _kb(size: int) -> int:
    return round(size / 1024)


def _tidy_text(text: str) -> str:
    """At most one blank line in a row and no trailing spaces: template whitespace is fiddly."""
    lines = (line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
