"""The `job` metric provider and `valueFrom` arguments against the fake API server: real REST
calls through Coalmine's cluster adapter, impersonating the repository's account."""

from __future__ import annotations

import base64

import pytest

from bot.analysis.providers import ProviderError, valuefrom
from bot.analysis.providers import job as jobs
from bot.cluster.model import Owner
from bot.policy import KindPattern, Policy
from tests.harness.processes import wait_until

SA = "system:serviceaccount:shop:deployer"
OWNER = Owner("github", 1296269, "acme/gitops", "web")
JOB = {"metadata": {"labels": {"team": "qa"}},
       "spec": {"backoffLimit": 0, "template": {"spec": {
           "restartPolicy": "Never",
           "containers": [{"name": "smoke", "image": "registry.example/smoke:1"}]}}}}


def target(number: int = 1, metric: str = "smoke", run: str = "abc1234-a0-1-step2"):
    return jobs.JobTarget(app="web", run_id=run, metric=metric, number=number,
                          namespace="shop", owner=OWNER, revision="abc1234")


@pytest.fixture
def view(fake_kube, kube_cluster):
    fake_kube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    return kube_cluster.impersonating(SA)


def verdict_when_done(view, name):
    return wait_until(lambda: jobs.verdict(view, "shop", name, 0.0), 10, 0.05)


def test_a_job_is_created_as_the_repository_named_and_labelled_as_argo_names_it(fake_kube, view):
    name = jobs.start(view, JOB, target(), Policy())
    assert name == "web-abc1234-a0-1-step2.smoke.1"
    live = fake_kube.get_object("batch/v1", "Job", "shop", name)
    labels = live["metadata"]["labels"]
    assert labels["coalmine.dev/analysis-run"] == "abc1234-a0-1-step2"
    assert labels["coalmine.dev/owner"] == OWNER.label_value and labels["team"] == "qa"
    assert live["metadata"]["annotations"]["coalmine.dev/analysis-metric"] == "smoke"
    pod_labels = live["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["coalmine.dev/analysis-run"] == "abc1234-a0-1-step2"
    assert {w.user for w in fake_kube.writes if w.name == name} == {SA}
    result = verdict_when_done(view, name)
    assert (result.phase, result.value) == ("Successful", "Complete")


def test_asking_again_watches_the_same_job(fake_kube, view):
    first = jobs.start(view, JOB, target(), Policy())
    assert jobs.start(view, JOB, target(), Policy()) == first
    assert len(fake_kube.objects("Job", "shop")) == 1


def test_a_failed_job_is_a_failed_measurement_with_the_jobs_reason(fake_kube, view):
    fake_kube.job_outcome("registry.example/smoke:1", "Failed")
    result = verdict_when_done(view, jobs.start(view, JOB, target(), Policy()))
    assert result.phase == "Failed"
    assert result.message == ("Job shop/web-abc1234-a0-1-step2.smoke.1 failed: "
                              "BackoffLimitExceeded: Job has reached the specified backoff limit")


def test_an_image_that_cannot_be_pulled_is_inconclusive(fake_kube, view):
    fake_kube.job_outcome("registry.example/smoke:1", "ImagePullBackOff")
    result = verdict_when_done(view, jobs.start(view, JOB, target(), Policy()))
    assert result.phase == "Inconclusive"
    assert "container smoke has terminal error (ImagePullBackOff)" in result.message


def test_a_running_job_has_no_verdict_and_is_deleted_with_its_pods(fake_kube, view):
    fake_kube.job_outcome("registry.example/smoke:1", "Running")
    name = jobs.start(view, JOB, target(), Policy())
    wait_until(lambda: fake_kube.objects("Pod", "shop"), 10, 0.05)
    assert jobs.verdict(view, "shop", name, 0.0) is None
    jobs.delete(view, "shop", name)
    assert fake_kube.objects("Job", "shop") == [] and fake_kube.objects("Pod", "shop") == []


def test_the_policy_must_allow_jobs_in_the_namespace(fake_kube, view):
    policy = Policy(allow_kinds=(KindPattern("apps", "Deployment"),))
    with pytest.raises(ProviderError) as refused:
        jobs.start(view, JOB, target(), policy)
    assert str(refused.value) == ("the repository's policy does not allow the metric's Job in "
                                  "namespace shop: kind batch/Job is not in allowKinds")
    assert fake_kube.objects("Job", "shop") == []


def test_the_clusters_rbac_refusal_is_an_error_naming_the_job(fake_kube, view):
    fake_kube.restrict(SA, namespaces=("elsewhere",))
    with pytest.raises(ProviderError, match=r"cannot create Job shop/web-abc1234.*Forbidden"):
        jobs.start(view, JOB, target(), Policy())


def test_garbage_collection_keeps_the_newest_jobs_of_the_metric(fake_kube, view):
    names = [jobs.start(view, JOB, target(n), Policy()) for n in range(1, 13)]
    other = jobs.start(view, JOB, target(1, metric="other"), Policy())
    deleted = jobs.collect_garbage(view, "shop", "abc1234-a0-1-step2", "smoke", OWNER, 10)
    assert deleted == names[:2]
    left = {j["metadata"]["name"] for j in fake_kube.objects("Job", "shop")}
    assert left == set(names[2:]) | {other}


def test_long_metric_names_are_cut_to_63_characters():
    name = jobs.job_name("web-abc1234-a0-1-step2", "m" * 80, 12)
    assert len(name) == 63 and name.endswith(".12") and name.startswith("web-abc1234-a0-1-step2.m")


# --------------------------------------------------------------------------- valueFrom


def secret(name, **data):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "shop"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_secret_key_ref_is_read_as_the_repository(fake_kube, view):
    fake_kube.put_object(secret("creds", token="s3cr3t-value"))
    values, secrets = valuefrom.resolve(
        [("token", ("secretKeyRef", "creds", "token"))], cluster=view, namespace="shop",
        workload={}, live=None)
    assert values == {"token": "s3cr3t-value"} and secrets == ["s3cr3t-value"]
    read = [r for r in fake_kube.requests if r.path.endswith("/secrets/creds")]
    assert read and all(r.user == SA for r in read)


def test_a_missing_secret_or_key_says_which_never_a_value(fake_kube, view):
    fake_kube.put_object(secret("creds", token="s3cr3t-value"))
    with pytest.raises(ProviderError, match="secret 'nope' not found in namespace shop"):
        valuefrom.read_secret(view, "shop", "nope", "token")
    with pytest.raises(ProviderError, match="key 'other' does not exist in secret 'creds'"):
        valuefrom.read_secret(view, "shop", "creds", "other")
