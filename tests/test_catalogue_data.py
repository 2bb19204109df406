"""Checks on the ISO/IEC 27001 catalogue data (2013 and 2022 editions)."""
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

CATALOGUE = Path(__file__).parents[1] / "mappings" / "catalogue"

NEW_IN_2022 = {
    "A.5.7", "A.5.23", "A.5.30", "A.7.4", "A.8.9", "A.8.10",
    "A.8.11", "A.8.12", "A.8.16", "A.8.23", "A.8.28",
}

# Incident-relevant rows of REFERENCE.md (2022 control -> 2013 predecessors).
REFERENCE_ROWS = {
    "A.5.2": {"A.6.1.1"},
    "A.5.5": {"A.6.1.3"},
    "A.5.6": {"A.6.1.4"},
    "A.5.7": set(),
    "A.5.24": {"A.16.1.1"},
    "A.5.25": {"A.16.1.4"},
    "A.5.26": {"A.16.1.5"},
    "A.5.27": {"A.16.1.6"},
    "A.5.28": {"A.16.1.7"},
    "A.5.29": {"A.17.1.1", "A.17.1.2", "A.17.1.3"},
    "A.5.30": set(),
    "A.5.31": {"A.18.1.1", "A.18.1.5"},
    "A.5.34": {"A.18.1.4"},
    "A.6.3": {"A.7.2.2"},
    "A.6.8": {"A.16.1.2", "A.16.1.3"},
    "A.7.13": {"A.11.2.4"},
    "A.8.6": {"A.12.1.3"},
    "A.8.15": {"A.12.4.1", "A.12.4.2", "A.12.4.3"},
    "A.8.16": set(),
    "A.8.17": {"A.12.4.4"},
}

# Titles of those rows as REFERENCE.md gives them.
REFERENCE_TITLES = {
    "A.5.24": "Information security incident management planning and preparation",
    "A.5.25": "Assessment and decision on information security events",
    "A.5.26": "Response to information security incidents",
    "A.5.27": "Learning from information security incidents",
    "A.5.28": "Collection of evidence",
    "A.6.8": "Information security event reporting",
    "A.8.15": "Logging",
    "A.8.17": "Clock synchronization",
}

CLAUSE_ID = re.compile(r"^(?:[4-9]|10)\.[1-9](?:\.[1-9])?$")
ID_2022 = re.compile(r"^A\.[5-8]\.[1-9][0-9]?$")
ID_2013 = re.compile(r"^A\.(?:[5-9]|1[0-8])\.[1-9]\.[1-9]$")


def _load(name):
    with open(CATALOGUE / name, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def cat22():
    return _load("iso27001-2022.yaml")


@pytest.fixture(scope="module")
def cat13():
    return _load("iso27001-2013.yaml")


@pytest.fixture(scope="module")
def was(cat22):
    return {c["id"]: c["was"] for c in cat22["controls"]}


def test_headers(cat22, cat13):
    assert cat22["edition"] == "2022"
    assert cat22["title"] == "ISO/IEC 27001:2022"
    assert cat13["edition"] == "2013"
    assert cat13["title"] == "ISO/IEC 27001:2013"


def test_2022_has_93_controls_in_four_themes(cat22):
    controls = cat22["controls"]
    assert len(controls) == 93
    assert Counter(c["theme"] for c in controls) == {
        "organizational": 37, "people": 8, "physical": 14, "technological": 34,
    }
    prefix = {"organizational": "A.5.", "people": "A.6.", "physical": "A.7.",
              "technological": "A.8."}
    for c in controls:
        assert c["id"].startswith(prefix[c["theme"]]), c


def test_2022_ids_contiguous_and_well_formed(cat22):
    ids = [c["id"] for c in cat22["controls"]]
    expected = ([f"A.5.{i}" for i in range(1, 38)] + [f"A.6.{i}" for i in range(1, 9)]
                + [f"A.7.{i}" for i in range(1, 15)] + [f"A.8.{i}" for i in range(1, 35)])
    assert ids == expected
    assert all(ID_2022.match(i) for i in ids)


def test_2013_has_114_controls_14_domains_35_objectives(cat13):
    controls = cat13["controls"]
    assert len(controls) == 114
    assert len({c["domain"] for c in controls}) == 14
    assert len({c["objective"] for c in controls}) == 35
    assert {c["domain"] for c in controls} == {f"A.{n}" for n in range(5, 19)}


def test_2013_ids_well_formed_and_consistent(cat13):
    ids = [c["id"] for c in cat13["controls"]]
    assert len(ids) == len(set(ids))
    for c in cat13["controls"]:
        assert ID_2013.match(c["id"]), c["id"]
        assert c["id"].rsplit(".", 1)[0] == c["objective"], c
        assert c["objective"].rsplit(".", 1)[0] == c["domain"], c
    # one title per objective and per domain
    for key in ("objective", "domain"):
        titles = {}
        for c in cat13["controls"]:
            titles.setdefault(c[key], set()).add(c[f"{key}_title"])
        assert all(len(t) == 1 for t in titles.values()), key
    # controls numbered 1..n within each objective, in order
    seen = {}
    for c in cat13["controls"]:
        n = int(c["id"].rsplit(".", 1)[1])
        assert n == seen.get(c["objective"], 0) + 1, c["id"]
        seen[c["objective"]] = n


def test_titles_present_and_strings(cat22, cat13):
    for cat in (cat22, cat13):
        for item in cat["clauses"] + cat["controls"]:
            assert isinstance(item["id"], str), item
            assert isinstance(item["title"], str) and item["title"].strip(), item
            assert len(item["title"]) < 100, item  # short names, not control text


def test_was_ids_exist_in_2013(cat22, cat13):
    ids13 = {c["id"] for c in cat13["controls"]}
    for c in cat22["controls"]:
        assert isinstance(c["was"], list), c
        assert len(c["was"]) == len(set(c["was"])), c
        for w in c["was"]:
            assert w in ids13, (c["id"], w)


def test_every_2013_control_has_a_successor(cat22, cat13):
    covered = {w for c in cat22["controls"] for w in c["was"]}
    missing = [c["id"] for c in cat13["controls"] if c["id"] not in covered]
    assert missing == []


def test_exactly_the_11_new_controls_have_empty_was(was):
    assert {cid for cid, w in was.items() if not w} == NEW_IN_2022


@pytest.mark.parametrize("cid", sorted(REFERENCE_ROWS))
def test_reference_rows(was, cid):
    assert set(was[cid]) == REFERENCE_ROWS[cid]


@pytest.mark.parametrize("w13,expected22", [
    ("A.6.1.1", {"A.5.2"}),
    ("A.8.1.1", {"A.5.9"}),
    ("A.8.1.2", {"A.5.9"}),
    ("A.13.2.1", {"A.5.14"}),
    ("A.13.2.2", {"A.5.14"}),
    ("A.13.2.3", {"A.5.14"}),
    ("A.18.2.3", {"A.5.36", "A.8.8"}),
])
def test_reverse_lookup(cat22, w13, expected22):
    assert {c["id"] for c in cat22["controls"] if w13 in c["was"]} == expected22


def test_reference_titles(cat22):
    titles = {c["id"]: c["title"] for c in cat22["controls"]}
    for cid, title in REFERENCE_TITLES.items():
        assert titles[cid] == title


def test_clause_ids(cat22, cat13):
    for cat in (cat22, cat13):
        ids = [c["id"] for c in cat["clauses"]]
        assert len(ids) == len(set(ids))
        for i in ids:
            assert CLAUSE_ID.match(i), i
            assert not i.startswith("A.")


def test_clause_sets(cat22, cat13):
    ids22 = {c["id"] for c in cat22["clauses"]}
    ids13 = {c["id"] for c in cat13["clauses"]}
    assert "6.3" in ids22 and "6.3" not in ids13
    assert ids22 - ids13 == {"6.3", "9.2.1", "9.2.2", "9.3.1", "9.3.2", "9.3.3"}
    assert ids13 <= ids22
    for cid in ("5.1", "5.3", "7.2"):  # the clauses seed 004 cites
        assert cid in ids22 and cid in ids13


def test_clause_10_swap(cat22, cat13):
    c22 = {c["id"]: c for c in cat22["clauses"]}
    c13 = {c["id"]: c for c in cat13["clauses"]}
    assert c22["10.1"]["title"] == "Continual improvement"
    assert c22["10.2"]["title"] == "Nonconformity and corrective action"
    assert c13["10.1"]["title"] == "Nonconformity and corrective action"
    assert c13["10.2"]["title"] == "Continual improvement"
    assert c22["10.1"]["was"] == ["10.2"]
    assert c22["10.2"]["was"] == ["10.1"]
    assert c22["6.3"]["was"] == []
    assert c22["5.3"]["title"] == "Organizational roles, responsibilities and authorities"


def test_clause_was_ids_exist_in_2013(cat22, cat13):
    ids13 = {c["id"] for c in cat13["clauses"]}
    for c in cat22["clauses"]:
        for w in c["was"]:
            assert w in ids13, (c["id"], w)
        # titles carried over unchanged where the clause kept its number
        if c["was"] == [c["id"]]:
            t13 = next(x["title"] for x in cat13["clauses"] if x["id"] == c["id"])
            assert c["title"] == t13, c["id"]
