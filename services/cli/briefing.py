"""The audit briefing, rendered from the services' data as Markdown or self-contained HTML."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape

from services.cli.client import AuditView
from shared.contracts import ActionStatus, ActionV1, Category, Descriptor, ThemeSnapshotV1

SUPPRESS_BELOW = 3
"""Small-number disclosure control: public briefings show no count below this."""

SUPPRESSED = f"fewer than {SUPPRESS_BELOW}"

REGISTER = {
    Descriptor.ALL: "in all cases",
    Descriptor.ALMOST_ALL: "in almost all cases",
    Descriptor.MOST: "in most cases",
    Descriptor.SOME: "in some cases",
    Descriptor.FEW: "in a few cases",
    Descriptor.NONE: "in no case, after later reviews",
}
"""Prevalence in the audit's own words."""

COLOURS = {
    Category.RISK_FACTOR: "#b8413c",
    Category.PRACTICE_CONCERN: "#d68a00",
    Category.GOOD_PRACTICE: "#3f8f4f",
}

CATEGORY_NAMES = {
    Category.RISK_FACTOR: "risk factor",
    Category.PRACTICE_CONCERN: "area for improvement",
    Category.GOOD_PRACTICE: "good practice",
}


@dataclass(frozen=True)
class BriefingData:
    """Everything a briefing shows: the services' answers plus the names people read."""

    audit: AuditView
    themes: Sequence[ThemeSnapshotV1]
    actions: Sequence[ActionV1]
    generated_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    sub_group_names: Mapping[str, str] = field(default_factory=dict)

    def label(self, theme: str) -> str:
        """A theme's label, or its code made readable."""
        return self.labels.get(theme) or theme.replace("_", " ").capitalize()

    def sub_group(self, sub_group: str) -> str:
        """A sub-group's name, or its id made readable."""
        return self.sub_group_names.get(sub_group) or sub_group.replace("_", " ").capitalize()


def count(n: int, public: bool) -> str:
    """A count as a public or internal briefing may show it."""
    return SUPPRESSED if public and n < SUPPRESS_BELOW else str(n)


def suppress_text(text: str) -> str:
    """Free text from the services with every small 'n of m' count suppressed."""
    text = re.sub(r"\bof ([0-2]) (cases?)\b", rf"of {SUPPRESSED} \2", text)
    return re.sub(r"(?<![\d.])\b([0-2]) of\b", f"{SUPPRESSED} of", text)


def figure(theme: ThemeSnapshotV1, public: bool) -> str:
    """'5 of 6 cases, 83%', or what a public briefing may say of it."""
    cases = f"{count(theme.cases_with_theme, public)} of {count(theme.cases_total, public)} cases"
    hidden = public and min(theme.cases_with_theme, theme.cases_total) < SUPPRESS_BELOW
    # A percentage of a known total gives a suppressed count away.
    return cases if hidden else f"{cases}, {round(theme.prevalence * 100)}%"


def ordered(themes: Sequence[ThemeSnapshotV1]) -> list[ThemeSnapshotV1]:
    """Patterns first, then by prevalence, then by code."""
    return sorted(themes, key=lambda t: (not t.is_pattern, -t.prevalence, t.theme))


def sample_size(data: BriefingData) -> int:
    """Cases reviewed: the audit's count, else what the snapshots say."""
    if data.audit.cases is not None:
        return data.audit.cases
    return max((t.cases_total for t in data.themes), default=0)


def agencies(data: BriefingData) -> list[str]:
    """Agencies that took part: those that reviewed a case, else those that reported a theme."""
    if data.audit.agencies:
        return list(data.audit.agencies)
    return sorted({a for t in data.themes for a in t.agencies})


def small_sample(data: BriefingData) -> bool:
    """The caveat the audit itself gives while fewer than ten cases were reviewed."""
    return any(t.small_sample for t in data.themes) or sample_size(data) < 10


def _cohort(counts: Mapping[str, int], public: bool) -> str:
    return "; ".join(f"{k.replace('_', ' ')}: {count(v, public)}" for k, v in counts.items())


def _seen_by(theme: ThemeSnapshotV1) -> str:
    names = ", ".join(theme.agencies)
    return f"seen by {names}" if len(theme.agencies) != 1 else f"seen by {names} only"


def _waits(theme: ThemeSnapshotV1) -> str:
    if theme.median_waited_days is None:
        return ""
    return f"; median wait {theme.median_waited_days:g} days"


@dataclass(frozen=True)
class Item:
    """One line of a section: a lead-in in bold and the rest."""

    lead: str
    text: str


@dataclass(frozen=True)
class Section:
    """A titled list of items, with optional paragraphs before it."""

    title: str
    paragraphs: tuple[str, ...] = ()
    items: tuple[Item, ...] = ()


def _theme_item(data: BriefingData, theme: ThemeSnapshotV1, public: bool) -> Item:
    words = REGISTER[theme.descriptor]
    return Item(
        data.label(theme.theme),
        f"{words} ({figure(theme, public)}); {_seen_by(theme)}{_waits(theme)}.",
    )


def sections(data: BriefingData, public: bool) -> list[Section]:
    """The briefing's content, in the order the audit's own report uses."""
    themes = ordered(data.themes)
    total = sample_size(data)
    about = [
        f"{count(total, public)} cases were audited in detail by {len(agencies(data))} agencies "
        f"({', '.join(agencies(data))}), each reviewing its own records before the partners "
        "compared findings."
    ]
    if data.audit.legal_status:
        about.append(f"Legal status: {_cohort(data.audit.legal_status, public)}.")
    if data.audit.age_band:
        about.append(f"Age band: {_cohort(data.audit.age_band, public)}.")
    if small_sample(data):
        about.append(
            "A small sample of cases was audited and the findings are presented with that caveat."
        )
    if public:
        about.append(f"Counts below {SUPPRESS_BELOW} are shown as '{SUPPRESSED}'.")
    patterns = [t for t in themes if t.is_pattern]
    risks = [t for t in patterns if t.category == Category.RISK_FACTOR]
    concerns = [t for t in patterns if t.category == Category.PRACTICE_CONCERN]
    good = [t for t in themes if t.category == Category.GOOD_PRACTICE and t.cases_with_theme]
    others = [
        t
        for t in themes
        if not t.is_pattern and t.category != Category.GOOD_PRACTICE and t.cases_with_theme
    ]
    key = (
        f"{len(patterns)} themes recurred across cases and agencies (each in at least two cases "
        f"and reported by at least two agencies): {len(risks)} risk factors in the children's "
        f"lives, {len(concerns)} areas for improvement and "
        f"{sum(1 for t in patterns if t.category == Category.GOOD_PRACTICE)} examples of good "
        "practice."
        if patterns
        else "No theme recurred across cases and agencies."
    )
    out = [
        Section("About the audit", paragraphs=tuple(about)),
        Section(
            "Key messages and findings",
            paragraphs=(key, "Risk factors:") if risks else (key,),
            items=tuple(_theme_item(data, t, public) for t in risks),
        ),
        Section(
            "Examples of good practice",
            paragraphs=() if good else ("No good practice was recorded.",),
            items=tuple(_theme_item(data, t, public) for t in good),
        ),
        Section(
            "Identified areas for improvement",
            paragraphs=() if concerns else ("No area for improvement recurred across agencies.",),
            items=tuple(_theme_item(data, t, public) for t in concerns),
        ),
    ]
    if others:
        out.append(
            Section(
                "Also noted",
                paragraphs=(
                    "Seen in one case or by one agency only, so not a cross-agency pattern; "
                    "not routed as an action:",
                ),
                items=tuple(_theme_item(data, t, public) for t in others),
            )
        )
    out.append(_recommendations(data, public))
    return out


def _recommendations(data: BriefingData, public: bool) -> Section:
    items = []
    # The routing file's order, which is the audit's own order of recommendations.
    order = list(data.sub_group_names)
    rank = {group: index for index, group in enumerate(order)}
    for action in sorted(
        data.actions, key=lambda a: (rank.get(a.sub_group, len(order)), a.sub_group)
    ):
        text = suppress_text(action.recommendation) if public else action.recommendation
        state = (
            f"due by {action.due_by.isoformat()}; status {action.status.value.replace('_', ' ')}"
        )
        if action.owner:
            state += f"; owner {action.owner}"
        if action.escalated_to:
            state += f"; escalated to {data.sub_group(action.escalated_to)}"
        themes = ", ".join(data.label(t).lower() for t in action.themes)
        if action.status == ActionStatus.WITHDRAWN:
            text = "Withdrawn: no pattern routes here any longer."
        items.append(
            Item(
                data.sub_group(action.sub_group),
                f"{text} (Themes: {themes or 'none'}; {state}.)",
            )
        )
    return Section(
        "Recommendations",
        paragraphs=(
            "The learning is shared with these sub-groups, to be considered within their work:"
            if items
            else "No recommendation has been routed.",
        ),
        items=tuple(items),
    )


def _title(data: BriefingData) -> str:
    return data.audit.title or data.audit.audit_id


def _subtitle(data: BriefingData, public: bool) -> str:
    kind = "Public briefing" if public else "Briefing"
    return (
        f"{kind} for multi-agency case audit `{data.audit.audit_id}`, "
        f"generated {data.generated_at.strftime('%d %B %Y %H:%M %Z').strip()} from the live audit."
    )


def render_markdown(data: BriefingData, public: bool = False) -> str:
    """The briefing as Markdown."""
    lines = [f"# {_title(data)}", "", _subtitle(data, public), ""]
    for section in sections(data, public):
        lines += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        if section.items:
            lines += [f"- **{item.lead}**: {item.text}" for item in section.items]
            lines.append("")
    return "\n".join(lines)


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#1f2328;line-height:1.5}
h1{font-size:1.6rem;margin-bottom:.25rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.25rem}
.sub{color:#57606a;margin-top:0}code{background:#f6f8fa;padding:0 .25rem;border-radius:3px}
li{margin:.35rem 0}svg text{font-size:12px;fill:#1f2328}.legend span{display:inline-block;
width:.8rem;height:.8rem;margin:0 .3rem 0 1rem;vertical-align:middle}
"""


def chart_svg(data: BriefingData, public: bool = False) -> str:
    """Prevalence of every theme as horizontal bars coloured by category, patterns first."""
    themes = ordered(data.themes)
    # Wide enough for the longest label at about 7 px a character in 12 px type.
    longest = max((len(data.label(t.theme)) + 2 for t in themes), default=10)
    label_w, bar_w, value_w, row_h, top = 7 * longest + 16, 260, 170, 22, 8
    width = label_w + bar_w + value_w
    height = top * 2 + row_h * max(len(themes), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="100%" '
        f'viewBox="0 0 {width} {height}" aria-labelledby="chart-title">',
        '<title id="chart-title">Prevalence of each theme across the audited cases</title>',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="2" height="6" fill="#8c959f"/>'
        "</pattern></defs>",
    ]
    for row, theme in enumerate(themes):
        y = top + row * row_h
        label = escape(data.label(theme.theme)) + (" \u25c6" if theme.is_pattern else "")
        weight = ' font-weight="600"' if theme.is_pattern else ""
        hidden = public and min(theme.cases_with_theme, theme.cases_total) < SUPPRESS_BELOW
        common = (
            f'data-theme="{escape(theme.theme)}" data-category="{theme.category.value}" '
            f'x="{label_w}" y="{y + 4}" height="{row_h - 8}"'
        )
        if hidden:
            # Show only the range the suppressed count lies in, never its size.
            span = bar_w * min(1.0, SUPPRESS_BELOW / max(theme.cases_total, 1))
            bar = (
                f'<rect class="bar suppressed" {common} width="{span:.1f}" fill="url(#hatch)" '
                f'stroke="{COLOURS[theme.category]}" stroke-dasharray="3 2"/>'
            )
        else:
            bar = (
                f'<rect class="bar" {common} width="{bar_w * theme.prevalence:.1f}" '
                f'fill="{COLOURS[theme.category]}"/>'
            )
        value = escape(figure(theme, public))
        parts += [
            f'<text x="{label_w - 8}" y="{y + row_h / 2 + 4}" text-anchor="end"{weight}>'
            f"{label}</text>",
            f"<g><title>{escape(data.label(theme.theme))}: {value}</title>{bar}</g>",
            f'<text x="{label_w + bar_w + 6}" y="{y + row_h / 2 + 4}">{value}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    # Markdown-style code spans are the only markup the sections carry.
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def render_html(data: BriefingData, public: bool = False) -> str:
    """The briefing as one self-contained HTML page with an inline SVG chart."""
    body = [
        f"<h1>{escape(_title(data))}</h1>",
        f'<p class="sub">{_inline(_subtitle(data, public))}</p>',
    ]
    for index, section in enumerate(sections(data, public)):
        body.append(f"<h2>{escape(section.title)}</h2>")
        body += [f"<p>{_inline(p)}</p>" for p in section.paragraphs]
        if section.items:
            body.append("<ul>")
            body += [
                f"<li><strong>{escape(i.lead)}</strong>: {_inline(i.text)}</li>"
                for i in section.items
            ]
            body.append("</ul>")
        if index == 1 and data.themes:
            legend = "".join(
                f'<span style="background:{colour}"></span>{CATEGORY_NAMES[category]}'
                for category, colour in COLOURS.items()
            )
            body += [
                "<h3>Prevalence by theme</h3>",
                f'<p class="legend">{legend} &nbsp; \u25c6 cross-agency pattern</p>',
                f"<figure>{chart_svg(data, public)}</figure>",
            ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(_title(data))}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
