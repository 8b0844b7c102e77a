"""Big catalogues: the tools most relevant to a goal, within a budget. Pure functions.

Sending every tool's description and schema with every plan request stops scaling at a few dozen
tools (64 tools are about 10,000 tokens). Above a budget (a tool count and an estimated token
count), the planner sees a shortlist ranked by Okapi BM25 over each tool's name, description and
parameter names, against the goal and, at half weight, the thread's earlier goals (follow-ups such
as "now the same for Berlin" name no tool). BM25 is lexical, offline and deterministic: no
service, no model, no dependency. It is written out here (about forty lines) rather than taken
from `rank-bm25`, which would bring numpy for arithmetic this small and cannot weight query terms.

Two things go beyond one tool's words, because a goal often names none of them ("are there
uncommitted changes?" needs `git_status`, whose description says "working tree status"):

- a server prior: each server is scored as one document (all its tools' words), and a fraction of
  that score is added to each of its tools, since a server's tools are one coherent subject: a
  goal about commits lifts every git tool, not only those that say "commit";
- an even spread for what the goal does not match: the tools no goal word reaches are not left in
  alphabetical order (which favours one server) but taken in turn from each server, the servers the
  goal matched first, each server's most representative tools (those sharing most words with its
  other tools) first; so every server's core tools stay in sight when the words fail.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.dag.catalogue import ToolSpec
from scheduler.planning.prompts import render_tool

K1 = 1.2
B = 0.75
HISTORY_WEIGHT = 0.5
SERVER_WEIGHT = 0.25
"""The share of its server's score a tool inherits (chosen on the development goals)."""
DEFAULT_MAX_TOOLS = 30
DEFAULT_MAX_TOOL_TOKENS = 6_000
CHARS_PER_TOKEN = 4
"""Tokens are estimated as characters / 4 (OpenAI's rule of thumb for English and JSON)."""

# Words that say nothing about which tool fits: common English, and verbs of asking.
_STOP_WORDS = """a about after all also an and any are as at be been before but by can could do
does for from get give has have how i if in into is it its me my not of on or our please show so
some than that the their them then there these this those to up us use using want was we what
when where which who why will with would you your"""
STOP_WORDS = frozenset(_STOP_WORDS.split())
_URL = re.compile(r"\b(?:https?://|www\.)\S*", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w:./-])\d+(?:\.\d+)?(?![\w:./-])")
"""A number standing alone (not part of a time, date, version, path or name)."""
_FILE_NAME = re.compile(r"[\w./-]+\.[A-Za-z][A-Za-z0-9]{0,4}\b|(?:^|\s)/[\w.-]+/")


def _synonyms(groups: str) -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for line in groups.strip().splitlines():
        head, _, rest = line.partition(":")
        table.setdefault(stem(head.strip()), set()).update(words(rest))
    return {word: frozenset(more) for word, more in table.items()}


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[a-z0-9]+")


def estimate_tokens(text: str) -> int:
    """A token estimate for budgets and figures (no tokenizer for every model is at hand)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def tool_tokens(name: str, spec: ToolSpec) -> int:
    """Estimated tokens of one tool in the planner's prompt."""
    return estimate_tokens(render_tool(name, spec))


def stem(word: str) -> str:
    """A light suffix-stripper, so that files/file, commits/commit, created/create meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ches", "shes", "sses", "xes"):
        if word.endswith(suffix):
            return word[:-2]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # committed -> commit, stopped -> stop
            break
    else:
        if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
            word = word[:-1]
    # write/writing/writ, create/created/creat: one form, whichever way the word was met.
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def words(text: str) -> list[str]:
    """`text` as stemmed words: camelCase, snake_case and kebab-case split, stop words left out."""
    split = _CAMEL.sub(" ", text).lower()
    return [stem(w) for w in _WORD.findall(split) if w not in STOP_WORDS]


# What people say in a goal -> the words tools use for it. Kept small and generic: verbs and
# nouns of everyday requests, not names of particular tools.
SYNONYMS = _synonyms(
    """
    remember: memory store create
    memorize: memory store create
    recall: memory search
    record: memory store create
    know: knowledge search
    forget: delete remove memory
    note: observation add memory
    save: write store
    store: write save
    download: fetch url
    webpage: fetch url
    website: fetch url
    page: fetch url
    article: fetch url
    rename: move
    folder: directory
    largest: size
    biggest: size
    modified: info time
    readme: file read text
    """
)


def tool_words(spec: ToolSpec) -> list[str]:
    """What a tool is matched on: its name (server and tool), description and parameter names."""
    server, _, tool = spec.name.partition(".")
    properties = spec.input_schema.get("properties")
    params = " ".join(properties) if isinstance(properties, dict) else ""
    return words(f"{server} {tool} {tool} {spec.description} {params}")


@dataclass(frozen=True, kw_only=True)
class Budget:
    """How much of the catalogue the planner is sent: at most this many tools and tokens."""

    max_tools: int = DEFAULT_MAX_TOOLS
    max_tokens: int = DEFAULT_MAX_TOOL_TOKENS


@dataclass(frozen=True, kw_only=True)
class Shortlist:
    """The tools whose descriptions the planner sees, and the names of the others."""

    shown: dict[str, ToolSpec]
    hidden: tuple[str, ...] = ()
    scores: Mapping[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.hidden


def query_words(text: str) -> set[str]:
    """A goal's words, plus what its URLs, file names and numbers stand for, plus synonyms."""
    found = set(words(text))
    if _URL.search(text):
        found |= set(words("url web"))
    if _NUMBER.search(_URL.sub(" ", text)):
        found |= set(words("number"))
    if _FILE_NAME.search(_URL.sub(" ", text)):
        found |= set(words("file path"))
    for word in list(found):
        found |= SYNONYMS.get(word, frozenset())
    return found


def query_weights(goal: str, earlier_goals: Sequence[str]) -> dict[str, float]:
    """Each query word's weight: the goal's words count 1, earlier goals' words half."""
    weights: dict[str, float] = dict.fromkeys(query_words(goal), 1.0)
    for earlier in earlier_goals:
        for word in query_words(earlier):
            weights[word] = weights.get(word, 0.0) + HISTORY_WEIGHT
    return weights


def bm25_scores(
    documents: Mapping[str, Sequence[str]], query: Mapping[str, float]
) -> dict[str, float]:
    """Okapi BM25 score of each document for a weighted query (BM25+ style idf, never negative)."""
    if not documents:
        return {}
    lengths = {name: len(doc) for name, doc in documents.items()}
    average = sum(lengths.values()) / len(documents) or 1.0
    frequency: Counter[str] = Counter()
    for doc in documents.values():
        frequency.update(set(doc))
    count = len(documents)
    idf = {
        term: math.log(1 + (count - frequency[term] + 0.5) / (frequency[term] + 0.5))
        for term in query
    }
    scores: dict[str, float] = {}
    for name, doc in documents.items():
        terms = Counter(doc)
        norm = K1 * (1 - B + B * lengths[name] / average)
        scores[name] = sum(
            weight * idf[term] * terms[term] * (K1 + 1) / (terms[term] + norm)
            for term, weight in query.items()
            if terms[term]
        )
    return scores


def server_of(name: str) -> str:
    return name.partition(".")[0]


def representativeness(documents: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """How typical each tool is of its server: for each of its distinct words, how many of the
    server's other tools use it too, averaged. A server's core tools score high, oddities low."""
    by_server: dict[str, list[str]] = {}
    for name in documents:
        by_server.setdefault(server_of(name), []).append(name)
    typical: dict[str, float] = {}
    for names in by_server.values():
        used: Counter[str] = Counter()
        for name in names:
            used.update(set(documents[name]))
        for name in names:
            mine = set(documents[name])
            typical[name] = sum(used[w] - 1 for w in mine) / len(mine) if mine else 0.0
    return typical


def rank(
    catalogue: Mapping[str, ToolSpec], goal: str, earlier_goals: Sequence[str] = ()
) -> list[tuple[str, float]]:
    """Every tool with its score, best first (the module docstring says how)."""
    documents = {name: tool_words(spec) for name, spec in catalogue.items()}
    query = query_weights(goal, earlier_goals)
    servers: dict[str, list[str]] = {}
    for name, doc in documents.items():
        servers.setdefault(server_of(name), []).extend(doc)
    server_scores = bm25_scores(servers, query)
    tool_scores = bm25_scores(documents, query)
    scores = {
        name: tool_scores[name] + SERVER_WEIGHT * server_scores[server_of(name)]
        for name in documents
    }
    matched = sorted(
        ((name, score) for name, score in scores.items() if score > 0),
        key=lambda item: (-item[1], item[0]),
    )
    return matched + [(name, 0.0) for name in _spread(documents, server_scores, scores)]


def _spread(
    documents: Mapping[str, Sequence[str]],
    server_scores: Mapping[str, float],
    scores: Mapping[str, float],
) -> list[str]:
    """The unmatched tools, one from each server in turn (servers by score, then name), each
    server's most representative tools first."""
    typical = representativeness(documents)
    queues: dict[str, list[str]] = {}
    for name in sorted(documents, key=lambda n: (-typical[n], n)):
        if scores[name] <= 0:
            queues.setdefault(server_of(name), []).append(name)
    order = sorted(queues, key=lambda server: (-server_scores[server], server))
    spread: list[str] = []
    for turn in range(max(map(len, queues.values()), default=0)):
        spread.extend(queues[server][turn] for server in order if turn < len(queues[server]))
    return spread


def shortlist(
    catalogue: Mapping[str, ToolSpec],
    *,
    goal: str,
    earlier_goals: Sequence[str] = (),
    budget: Budget,
) -> Shortlist:
    """The whole catalogue when it fits `budget`; otherwise the best-ranked tools that fit.

    A tool costs its estimated tokens as the planner's prompt renders it. The best-ranked tool is
    always shown; a tool too big for what is left of the budget is passed over for smaller ones.
    """
    costs = {name: tool_tokens(name, spec) for name, spec in catalogue.items()}
    if len(catalogue) <= budget.max_tools and sum(costs.values()) <= budget.max_tokens:
        return Shortlist(shown=dict(catalogue))
    ranked = rank(catalogue, goal, earlier_goals)
    chosen: list[str] = []
    spent = 0
    for name, _score in ranked:
        if len(chosen) >= budget.max_tools:
            break
        if chosen and spent + costs[name] > budget.max_tokens:
            continue
        chosen.append(name)
        spent += costs[name]
    shown = {name: catalogue[name] for name in chosen}
    hidden = tuple(sorted(set(catalogue) - set(shown)))
    return Shortlist(shown=shown, hidden=hidden, scores=dict(ranked))


def with_tools(
    current: Shortlist, catalogue: Mapping[str, ToolSpec], names: Iterable[str]
) -> Shortlist:
    """`current` with the named tools (those in the catalogue) moved from hidden to shown."""
    added = {name: catalogue[name] for name in names if name in catalogue}
    if not added:
        return current
    shown = {**current.shown, **added}
    return Shortlist(
        shown=shown,
        hidden=tuple(name for name in current.hidden if name not in shown),
        scores=current.scores,
    )
