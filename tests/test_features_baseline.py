"""Baseline ranker features (vectorized) against a slow pandas reference: only events before each snapshot."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from argusrank.features.baseline import DAY, compute_baseline, snapshot_times
from argusrank.features.schema import feedback_grade

T0 = 1_700_000_000


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    n = 800
    ev = pa.table({"user_id": rng.integers(1, 15, n), "timestamp": rng.integers(0, 40 * DAY, n) + T0,
                   "item_id": rng.integers(1, 25, n), "played_ratio": rng.random(n).astype(np.float32),
                   "liked": rng.random(n) < 0.25, "disliked": rng.random(n) < 0.05})
    snaps = snapshot_times(T0 + 30 * DAY, T0 + 40 * DAY)
    df = ev.to_pandas()
    df["grade"] = feedback_grade(df.played_ratio.to_numpy(), df.liked.to_numpy(), df.disliked.to_numpy())
    return compute_baseline(ev, snaps), df, snaps


def test_snapshot_times_cover_the_window():
    s = snapshot_times(T0 + 100, T0 + 3 * DAY + 5)
    assert s[0] <= T0 + 100 and s[-1] > T0 + 3 * DAY + 5 and np.all(np.diff(s) == DAY)


def test_item_and_user_stats_equal_slow_reference(data):
    tabs, df, snaps = data
    items = tabs["item_stats"].to_pandas()
    users = tabs["user_stats"].to_pandas()
    for s in snaps[[0, 4, -1]]:
        ts = items[items.event_timestamp.astype("int64") // 10**6 == s]
        for _, row in ts.sample(5, random_state=0).iterrows():
            past = df[(df.item_id == row.item_id) & (df.timestamp < s)]
            for w in (1, 7, 30):
                assert row[f"item_pop_{w}d"] == (past.timestamp >= s - w * DAY).sum()
            w7 = past[past.timestamp >= s - 7 * DAY]
            if len(w7):
                assert row.item_like_rate_7d == pytest.approx((w7.grade == 2).mean())
                assert row.item_pos_rate_7d == pytest.approx((w7.grade >= 1).mean())
        us = users[users.event_timestamp.astype("int64") // 10**6 == s]
        assert set(us.user_id) == set(df[df.timestamp < s].user_id)  # every user seen before s, nobody else
        for _, row in us.sample(5, random_state=0).iterrows():
            past = df[(df.user_id == row.user_id) & (df.timestamp < s)]
            assert row.user_events_total == len(past) and row.user_last_ts == past.timestamp.max()
            w7 = past[past.timestamp >= s - 7 * DAY]
            assert row.user_events_7d == len(w7)
            if len(w7):
                assert row.user_skip_rate_7d == pytest.approx((w7.grade == 0).mean())


def test_user_item_rows_are_valid_strictly_after_their_event(data):
    tabs, df, _ = data
    ui = tabs["user_item"].to_pandas()
    ev_ts = ui.event_timestamp.astype("int64") // 10**6
    assert (ev_ts == ui.ui_last_ts + 1).all()
    for _, row in ui.sample(20, random_state=1).iterrows():
        past = df[(df.user_id == row.user_id) & (df.item_id == row.item_id) & (df.timestamp <= row.ui_last_ts)]
        assert row.ui_count == len(past) and row.ui_likes == (past.grade == 2).sum()


def test_user_item_priors_hold_each_users_latest_user_item_row(data):
    from argusrank.features.baseline import USER_ITEM, priors_for, user_item_priors

    tabs, df, _ = data
    ui = tabs["user_item"].to_pandas()
    latest = ui.sort_values("event_timestamp").groupby(["user_id", "item_id"]).last().reset_index()
    pri = tabs["user_item_priors"].to_pandas()
    assert sorted(pri.user_id) == sorted(df.user_id.unique())
    for _, row in pri.iterrows():
        want = latest[latest.user_id == row.user_id].sort_values("item_id")
        assert list(row.prior_item_ids) == want.item_id.tolist()
        for f in USER_ITEM.features:
            np.testing.assert_array_equal(row[f"prior_{f}"], want[f].to_numpy())
        assert row.event_timestamp == want.event_timestamp.max()
    # the serving join: every catalog item, seen or not, against the slow per-pair lookup
    row = pri.iloc[0]
    items = np.arange(0, 30)
    got = priors_for(row.to_dict(), items)
    for j, it in enumerate(items):
        hit = latest[(latest.user_id == row.user_id) & (latest.item_id == it)]
        for f in USER_ITEM.features:
            assert (np.isnan(got[f][j]) if hit.empty else got[f][j] == hit[f].iloc[0]), (it, f)
    # the cap keeps the most recently touched items
    capped = user_item_priors(tabs["user_item"], max_items=3).to_pandas()
    for _, r in capped.iterrows():
        mine = latest[latest.user_id == r.user_id].sort_values(["event_timestamp", "item_id"])
        assert len(r.prior_item_ids) == min(3, len(mine))
        assert set(r.prior_item_ids) <= set(mine.item_id) and max(r.prior_ui_last_ts) == mine.ui_last_ts.max()


def test_item_stats_from_bucketed_cell_counts_equal_one_pass_over_all_events(tmp_path):
    """Export's ``item_stats`` sums per-(item, time cell) counts over user buckets, never holding the events: the
    same rows, bit for bit, as the whole-log computation, with snapshots 5 h apart (window starts fall between
    snapshots), events exactly on a snapshot or window start, before every window and after the last snapshot,
    and null feedback."""
    import pandas as pd

    from argusrank.features import baseline
    from argusrank.features.io import write_dataset
    from argusrank.features.schema import EVENT_SCHEMA

    rng = np.random.default_rng(11)
    n = 3000
    liked = pa.array(np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.3).tolist(), pa.bool_())
    snaps = snapshot_times(T0 + 38 * DAY, T0 + 41 * DAY, every_s=5 * 3600)
    ts = rng.integers(0, 45 * DAY, n) + T0
    on_bound = rng.random(n) < 0.2  # events exactly at a snapshot or a window start: which side counts them
    ts[on_bound] = rng.choice(np.concatenate([snaps - w * DAY for w in (0, 1, 7, 30)]), on_bound.sum())
    ev = pa.table({"user_id": rng.integers(0, 64, n), "timestamp": ts,
                   "item_id": rng.integers(0, 40, n), "is_organic": np.ones(n, bool), "surface": np.zeros(n, np.int8),
                   "request_id": pa.nulls(n, pa.int64()), "position": pa.nulls(n, pa.int16()),
                   "event_type": np.zeros(n, np.int8), "played_ratio": rng.random(n).astype(np.float32),
                   "liked": liked, "disliked": rng.random(n) < 0.05, "rating": pa.nulls(n, pa.float32())})
    write_dataset(tmp_path / "ds", ev.cast(EVENT_SCHEMA), None, {}, user_buckets=8)
    want = baseline._item_view(baseline._by_time(ev), snaps).to_pandas()
    got, catalog = baseline.item_view_by_bucket(tmp_path / "ds", snaps)
    got = got.to_pandas()
    assert len(want) > 300 and want["item_like_rate_7d"].notna().all() and (want["item_pop_1d"] == 0).any()
    pd.testing.assert_frame_equal(got, want)
    np.testing.assert_array_equal(catalog, np.unique(ev["item_id"].to_numpy()))  # every item with an event
