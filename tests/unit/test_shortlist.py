from __future__ import annotations

from typing import Any

import pytest

from scheduler.dag.catalogue import ToolSpec
from scheduler.planning.shortlist import (
    Budget,
    bm25_scores,
    query_weights,
    query_words,
    rank,
    representativeness,
    shortlist,
    stem,
    tool_tokens,
    with_tools,
    words,
)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("files", "fil"),
        ("file", "fil"),
        ("directories", "directory"),
        ("branches", "branch"),
        ("commits", "commit"),
        ("committed", "commit"),
        ("committing", "commit"),
        ("created", "creat"),
        ("create", "creat"),
        ("writing", "writ"),
        ("write", "writ"),
        ("status", "status"),
        ("address", "address"),
        ("need", "need"),
        ("git", "git"),
    ],
)
def test_stem(word: str, expected: str) -> None:
    assert stem(word) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("get_current_time", ["current", "tim"]),
        ("listDirectoryWithSizes", ["list", "directory", "siz"]),
        ("gzip-file-as-resource", ["gzip", "fil", "resourc"]),
        ("What is the time in Tokyo?", ["tim", "tokyo"]),
        ("", []),
    ],
)
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_query_weights_count_the_goal_fully_and_earlier_goals_by_half() -> None:
    weights = query_weights("And in Berlin?", ["What time is it in Tokyo?", "Time in Oslo"])
    assert weights == {"berlin": 1.0, "tim": 1.0, "tokyo": 0.5, "oslo": 0.5}


@pytest.mark.parametrize(
    ("goal", "expected"),
    [
        ("Fetch https://example.com/a", {"url", "web", "fetch", "http", "exampl", "com"}),
        (
            "Summarise notes/todo.md",
            {"fil", "path", "summaris", "not", "todo", "md", "memory", "observation", "add"},
        ),
        (
            "Remember that Ann likes tea",
            {"remember", "memory", "stor", "creat", "ann", "lik", "tea"},
        ),
    ],
    ids=["a URL stands for url and web", "a file name for file and path", "a synonym"],
)
def test_query_words_add_what_urls_file_names_and_synonyms_stand_for(
    goal: str, expected: set[str]
) -> None:
    assert set(query_weights(goal, [])) == expected


def test_bm25_prefers_rare_terms_and_short_documents() -> None:
    documents = {
        "a": ["git", "commit", "log"],
        "b": ["git", "status"],
        "c": ["git", "commit", "log", "with", "many", "other", "words", "here"],
        "d": ["read", "fil"],
    }
    scores = bm25_scores(documents, {"commit": 1.0, "git": 1.0})
    assert scores["a"] > scores["c"] > scores["b"] > scores["d"] == 0.0
    assert bm25_scores(documents, {"git": 1.0})["b"] > bm25_scores(documents, {"git": 1.0})["c"]
    assert bm25_scores({}, {"git": 1.0}) == {}


def spec(name: str, description: str, *params: str, **schema: Any) -> ToolSpec:
    properties = {param: {"type": "string"} for param in params}
    return ToolSpec(
        name=name,
        description=description,
        input_schema={"type": "object", "properties": properties, **schema},
    )


CATALOGUE = {
    s.name: s
    for s in (
        spec("time.get_current_time", "Get current time in a specific timezone", "timezone"),
        spec("time.convert_time", "Convert time between timezones", "time", "target_timezone"),
        spec("git.git_log", "Shows the commit logs", "repo_path", "max_count"),
        spec("git.git_status", "Shows the working tree status", "repo_path"),
        spec("files.read_text_file", "Read the complete contents of a file as text", "path"),
        spec("files.write_file", "Create a new file or overwrite an existing one", "path"),
        spec("memory.create_entities", "Create new entities in the knowledge graph", "entities"),
        spec("fetch.fetch", "Fetches a URL from the internet", "url"),
    )
}


@pytest.mark.parametrize(
    ("goal", "history", "first"),
    [
        ("What is the current time in Tokyo?", [], "time.get_current_time"),
        ("Convert 9am New York time to Berlin", [], "time.convert_time"),
        ("Show the last 10 commits", [], "git.git_log"),
        ("Read notes/todo.md", [], "files.read_text_file"),
        ("Summarise https://example.com/post", [], "fetch.fetch"),
        ("Remember that Ann likes tea", [], "memory.create_entities"),
        ("And now the 20 before those", ["Show me the last 5 commits"], "git.git_log"),
    ],
)
def test_rank_puts_the_tool_a_goal_needs_first(goal: str, history: list[str], first: str) -> None:
    assert rank(CATALOGUE, goal, history)[0][0] == first


def test_when_nothing_matches_every_server_takes_a_turn_its_typical_tools_first() -> None:
    ranked = rank(CATALOGUE, "zzz qqq")
    assert [name for name, _ in ranked] == [
        "fetch.fetch",
        "files.read_text_file",  # shares more words with files.write_file than the reverse
        "git.git_status",
        "memory.create_entities",
        "time.get_current_time",
        "files.write_file",
        "git.git_log",
        "time.convert_time",
    ]
    assert all(score == 0.0 for _, score in ranked)
    assert rank(CATALOGUE, "zzz qqq") == ranked


def test_a_server_the_goal_is_about_lifts_its_tools_that_share_no_word_with_the_goal() -> None:
    """'uncommitted' meets only git's words (commit), yet `git_status` is what answers it."""
    ranked = [name for name, _ in rank(CATALOGUE, "Are there uncommitted changes in the repo?")]
    assert ranked[:2] == ["git.git_status", "git.git_log"]


def test_unmatched_tools_of_the_matched_server_come_before_other_servers() -> None:
    ranked = [name for name, score in rank(CATALOGUE, "Show the commit logs")]
    assert ranked[:2] == ["git.git_log", "git.git_status"]


def test_representativeness_is_how_many_server_mates_share_a_tools_words() -> None:
    documents = {
        "s.a": ["read", "fil"],
        "s.b": ["read", "fil", "many"],
        "s.c": ["zip"],
        "t.only": ["echo"],
    }
    assert representativeness(documents) == {"s.a": 1.0, "s.b": 2 / 3, "s.c": 0.0, "t.only": 0.0}


@pytest.mark.parametrize(
    ("goal", "has_number"),
    [
        ("Add 17 and 25", True),
        ("What is 3.5 times 2?", True),
        ("Convert 14:30 Paris time", False),
        ("Read notes/2026-12-03.md", False),
        ("Show commit 4f2a9c1", False),
        ("Fetch https://example.com/page/2", False),
    ],
)
def test_a_number_standing_alone_stands_for_number(goal: str, has_number: bool) -> None:
    assert ("number" in query_words(goal)) is has_number


def test_a_catalogue_within_budget_is_shown_whole() -> None:
    offered = shortlist(CATALOGUE, goal="anything", budget=Budget(max_tools=8, max_tokens=10_000))
    assert offered.shown == CATALOGUE
    assert offered.complete
    assert offered.hidden == ()


def test_above_the_tool_count_the_best_ranked_tools_are_shown() -> None:
    offered = shortlist(
        CATALOGUE, goal="Show the last commits and the status", budget=Budget(max_tools=2)
    )
    assert set(offered.shown) == {"git.git_log", "git.git_status"}
    assert offered.hidden == tuple(sorted(set(CATALOGUE) - set(offered.shown)))
    assert not offered.complete


def test_above_the_token_budget_big_tools_give_way_to_smaller_ones() -> None:
    big = spec("files.search", "Search for commits " + "in great detail " * 100, "pattern")
    catalogue = {**CATALOGUE, big.name: big}
    log_cost = tool_tokens("git.git_log", CATALOGUE["git.git_log"])
    budget = Budget(max_tools=5, max_tokens=log_cost + 2 * tool_tokens(big.name, big) // 3)

    offered = shortlist(catalogue, goal="search the commit logs", budget=budget)

    shown = list(offered.shown)
    assert shown[0] == "git.git_log"
    assert big.name not in shown
    assert sum(tool_tokens(name, catalogue[name]) for name in shown) <= budget.max_tokens


def test_the_best_tool_is_shown_even_when_it_alone_exceeds_the_budget() -> None:
    offered = shortlist(CATALOGUE, goal="commit logs", budget=Budget(max_tools=3, max_tokens=1))
    assert list(offered.shown) == ["git.git_log"]


def test_with_tools_moves_named_tools_from_hidden_to_shown() -> None:
    offered = shortlist(CATALOGUE, goal="commit logs", budget=Budget(max_tools=1))
    grown = with_tools(offered, CATALOGUE, ["fetch.fetch", "no.such_tool"])
    assert list(grown.shown) == ["git.git_log", "fetch.fetch"]
    assert "fetch.fetch" not in grown.hidden
    assert len(grown.hidden) == len(CATALOGUE) - 2
    assert with_tools(offered, CATALOGUE, []) is offered
