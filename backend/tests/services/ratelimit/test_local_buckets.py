"""The in-process token bucket (no Redis, or Redis down): exact refill, shares, all-or-nothing."""

from app.services.ratelimit.buckets import BucketSpecs, DecisionRequest
from app.services.ratelimit.local_buckets import LocalBuckets

SECOND = 1_000_000


def request(*buckets: tuple[str, int, int, int]) -> DecisionRequest:
    return DecisionRequest(
        keys=tuple(key for key, *_ in buckets),
        specs=BucketSpecs([(capacity, refill, period) for _, capacity, refill, period in buckets]),
    )


def test_capacity_then_refusal_with_exact_retry_time() -> None:
    buckets = LocalBuckets(max_keys=100)
    one = request(("k", 3, 3, 7 * SECOND))  # 3 tokens per 7 s: 7/3 s per token
    decisions = [buckets.decide(one, 1, 0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].retry_after_us == 2_333_334  # ceil(7e6 / 3)


def test_fractional_tokens_are_kept_exactly() -> None:
    buckets = LocalBuckets(max_keys=100)
    one = request(("k", 2, 3, 7 * SECOND))
    assert buckets.decide(one, 1, 0).allowed
    assert buckets.decide(one, 1, 0).allowed
    # 7/3 s per token: one microsecond early is still refused, exactly on time is admitted.
    assert not buckets.decide(one, 1, 2_333_333).allowed
    assert buckets.decide(one, 1, 2_333_334).allowed
    # The 2 units (2/7,000,000 token) left over carry into the next refill: a bucket rounded to
    # whole tokens would refuse this request.
    assert buckets.decide(one, 1, 2_333_334 + 2_333_333).allowed


def test_share_divides_capacity_and_refill_but_never_below_one_token() -> None:
    buckets = LocalBuckets(max_keys=100)
    ten = request(("k", 10, 10, 60 * SECOND))
    assert sum(buckets.decide(ten, 4, 0).allowed for _ in range(10)) == 2  # 10 // 4
    tiny = request(("t", 1, 1, 60 * SECOND))
    assert sum(buckets.decide(tiny, 8, 0).allowed for _ in range(3)) == 1  # never fully closed
    # Refill is 1/4 of the tier: 2.5 tokens a minute, so one token after 24 s.
    assert not buckets.decide(ten, 4, 24 * SECOND - 1).allowed
    assert buckets.decide(ten, 4, 24 * SECOND).allowed


def test_a_refusal_by_one_bucket_takes_no_token_from_the_others() -> None:
    buckets = LocalBuckets(max_keys=100)
    user = ("user", 5, 5, 60 * SECOND)
    assert buckets.decide(request(user, ("ip", 1, 1, 60 * SECOND)), 1, 0).allowed
    refused = buckets.decide(request(user, ("ip", 1, 1, 60 * SECOND)), 1, 0)
    assert not refused.allowed
    assert buckets.decide(request(user), 1, 0).remaining == 3  # 5 - 1 admitted - 1 now


def test_the_table_is_bounded() -> None:
    buckets = LocalBuckets(max_keys=100)
    for i in range(1000):
        buckets.decide(request((f"k{i}", 1, 1, SECOND)), 1, 0)
    assert not buckets.decide(request(("k999", 1, 1, SECOND)), 1, 0).allowed  # recent: kept
    assert buckets.decide(request(("k0", 1, 1, SECOND)), 1, 0).allowed  # oldest: evicted, full
