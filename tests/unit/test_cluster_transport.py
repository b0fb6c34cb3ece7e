"""ThrottledCredentialHook: the loader's hook at most once per interval, and still in front."""

from __future__ import annotations

from types import SimpleNamespace

from bot.cluster.transport import ThrottledCredentialHook


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def loader_like(calls: list[str], name: str):
    """Like the kubeconfig loader's hook: it installs a fresh copy of itself each time."""

    def hook(configuration) -> None:
        calls.append(name)
        configuration.refresh_api_key_hook = loader_like(calls, name + "'")

    return hook


def test_the_hook_runs_once_per_interval_and_stays_in_front_of_the_loaders():
    calls: list[str] = []
    configuration = SimpleNamespace(refresh_api_key_hook=loader_like(calls, "h"))
    clock = Clock()
    ThrottledCredentialHook.install(configuration, every_s=5.0, clock=clock)
    throttle = configuration.refresh_api_key_hook
    assert isinstance(throttle, ThrottledCredentialHook)

    for _ in range(3):
        configuration.refresh_api_key_hook(configuration)
    assert calls == ["h"]
    assert configuration.refresh_api_key_hook is throttle

    clock.now += 4.9
    configuration.refresh_api_key_hook(configuration)
    assert calls == ["h"]
    clock.now += 0.2
    configuration.refresh_api_key_hook(configuration)
    assert calls == ["h", "h'"]  # the copy the loader installed last time
    assert configuration.refresh_api_key_hook is throttle


def test_install_wraps_once_and_leaves_a_configuration_without_hook_alone():
    configuration = SimpleNamespace(refresh_api_key_hook=None)
    ThrottledCredentialHook.install(configuration)
    assert configuration.refresh_api_key_hook is None

    configuration.refresh_api_key_hook = loader_like([], "h")
    ThrottledCredentialHook.install(configuration)
    first = configuration.refresh_api_key_hook
    ThrottledCredentialHook.install(configuration)
    assert configuration.refresh_api_key_hook is first
