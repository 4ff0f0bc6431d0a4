"""The shadow report's comparison (pure): episodes per rule, latest bands, first red."""

from __future__ import annotations

from streams.sim.shadow import Run, diff

H = 3600


def run(episodes: set[tuple[str, str, int, int]], bands: dict[str, list[tuple[int, str]]]) -> Run:
    r = Run(episodes=episodes)
    for acc, points in bands.items():
        for at, band in points:
            r.history.add(acc, at, 50.0, band)
        r.latest[acc] = points[-1]
    r.history.finish()
    return r


def test_an_episode_is_the_same_when_account_rule_and_start_agree():
    current = run(
        {("band_red", "a", 0, 12 * H), ("band_red", "b", 0, 12 * H), ("no_login_14d", "a", 5 * H, 5 * H)},
        {"a": [(0, "red")], "b": [(0, "yellow"), (H, "red")], "c": [(0, "green")]},
    )
    new = run(
        # a's band_red starts at the same time but fires later: the same episode; b's starts later
        {("band_red", "a", 0, 13 * H), ("band_red", "b", 2 * H, 14 * H), ("health_below_60", "c", H, H)},
        {"a": [(0, "red")], "b": [(0, "yellow"), (2 * H, "red")], "c": [(0, "yellow")]},
    )
    rules, bands, red = diff(current, new)
    by = {r.rule_id: r for r in rules}
    assert set(by) == {"band_red", "no_login_14d", "health_below_60"}
    assert (by["band_red"].current, by["band_red"].new) == (2, 2)
    assert [e.account_id for e in by["band_red"].only_current] == ["b"]
    assert [int(e.active_since.timestamp()) for e in by["band_red"].only_new] == [2 * H]
    assert [e.account_id for e in by["no_login_14d"].only_current] == ["a"] and not by[
        "no_login_14d"
    ].only_new
    assert [e.account_id for e in by["health_below_60"].only_new] == ["c"]
    assert [(b.account_id, b.current, b.new) for b in bands] == [("c", "green", "yellow")]
    assert [(c.account_id, int(c.current.timestamp()), int(c.new.timestamp())) for c in red["later"]] == [  # type: ignore[union-attr]
        ("b", H, 2 * H)
    ]
    assert not red["only_new"] and not red["only_old"] and not red["earlier"]


def test_identical_runs_differ_nowhere():
    same = {("band_red", "a", 0, H)}
    rules, bands, red = diff(run(same, {"a": [(0, "red")]}), run(same, {"a": [(0, "red")]}))
    assert [(r.current, r.new, r.only_current, r.only_new) for r in rules] == [(1, 1, [], [])]
    assert not bands and not any(red.values())
