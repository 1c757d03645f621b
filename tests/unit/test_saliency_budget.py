"""Issue 29: what an explanation costs and how it is bounded (effnet.saliency_budget), on tiny modules."""

from __future__ import annotations

import pytest
import torch

from effnet.saliency_budget import ExplainStopped, PassCost, internal_batch, passes, stop_hooks


def test_passes_per_method():
    assert passes("gradcam", 456) == (1, 1)
    assert passes("integrated-gradients", 224) == (1, 32)
    # occlusion at 224: window 32, stride 16 -> 13 x 13 positions, + Captum's baseline pass + the ranking pass
    assert passes("occlusion", 224) == (2 + 13 * 13, 0)


def test_chunks_fit_the_memory_and_the_time_budget():
    b5_like = PassCost(forward_s=0.5, backward_s=1.5, activation_bytes=2_400_000_000)
    assert internal_batch(b5_like, memory_mb=2048, chunk_s=2.0, gradients=True) == 1  # one image is over budget
    small = PassCost(forward_s=0.01, backward_s=0.05, activation_bytes=160_000_000)
    assert internal_batch(small, memory_mb=2048, chunk_s=2.0, gradients=True) == 12  # memory: 2048 / 160
    assert internal_batch(small, memory_mb=2048, chunk_s=0.2, gradients=True) == 4  # time: 0.2 / 0.05
    assert PassCost(0.1, 0.3, 1).estimate_s("integrated-gradients", 224) == pytest.approx(0.1 + 32 * 0.3 + 0.5)


def test_a_stop_request_ends_the_forward_pass_at_the_next_module():
    seen = []
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(6)])
    model[2].register_forward_hook(lambda *a: seen.append(2))
    stop = {"now": False}
    model[3].register_forward_pre_hook(lambda *a: stop.update(now=True))  # the client leaves during module 3
    model[4].register_forward_hook(lambda *a: seen.append(4))
    with stop_hooks(model, lambda: stop["now"]), pytest.raises(ExplainStopped):
        model(torch.zeros(1, 4))
    assert seen == [2]  # module 4 never ran
    assert model(torch.zeros(1, 4)).shape == (1, 4)  # the hooks are gone afterwards


class Spiky(torch.nn.Module):
    """A forward that is slow once (a load spike during the first timed pass), fast otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        self.calls += 1
        if self.calls == 2:  # call 1 is the untimed warm-up; call 2 the first timed forward
            time.sleep(0.4)
        return self.lin(x)


def test_one_slow_moment_does_not_set_the_cost():
    """The cost is the median of several timings: one spiked forward (0.4 s) does not make it 0.4 s."""
    cost = PassCost.measure(Spiky(), torch.zeros(1, 4))
    assert cost.forward_s < 0.2 and cost.backward_s < 0.2, cost


def test_the_cost_measurement_stops_when_asked():
    """A first request that times out while the cost is being measured for it leaves nothing running: the
    measurement stops at the next module like an explanation."""
    seen = []
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3)])
    model[2].register_forward_hook(lambda *a: seen.append(2))
    with pytest.raises(ExplainStopped):
        PassCost.measure(model, torch.zeros(1, 4), should_stop=lambda: True)
    assert seen == []
