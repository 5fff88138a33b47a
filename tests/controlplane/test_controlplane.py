"""The project's real Kubernetes control plane (scripts/controlplane/) works end to end.

These tests talk to a REAL kube-apiserver + etcd + kube-controller-manager started by the same
scripts that developers and CI use (`make cluster-up` = scripts/controlplane/up.sh). If the
control plane is not running, the fixture starts it with up.sh (and stops it again at the end,
unless GAMIFY_CP_KEEP=1). If the binaries have not been built, the tests FAIL, they never skip:
run `make cluster-build` (scripts/controlplane/build.sh) first.

What is proven here, because the operator's tests rely on it:
- namespaces are finalized by the namespace controller (create -> delete -> gone);
- the garbage collector deletes dependents of a deleted owner (ownerReferences);
- the job controller creates pods for a Job, and the cronjob controller creates Jobs;
- RBAC is enforced: an unprivileged ServiceAccount token and an impersonated user are denied,
  and a RoleBinding grants exactly what it says;
- CRDs become Established and serve custom resources;
- the pinned kubectl and helm work against the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.cluster import controlplane_lib, run, wait_until


def gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture()
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace, with its `default` ServiceAccount (needed before any pod)."""
    name = f"cp-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(
        f"serviceaccount {name}/default",
        lambda: not gone(lambda: core.read_namespaced_service_account("default", name)),
        timeout=30,
    )
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def kubectl(kubeconfig: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run(controlplane_lib("cp_bin kubectl"), "--kubeconfig", kubeconfig, *args, timeout=timeout)


# --- tests -----------------------------------------------------------------------------------


def test_apiserver_is_the_pinned_version_and_ready(api: client.ApiClient, kubeconfig: str) -> None:
    info = client.VersionApi(api).get_code()
    assert info.git_version == controlplane_lib("echo $GAMIFY_K8S_VERSION")
    ready = kubectl(kubeconfig, "get", "--raw", "/readyz?verbose")
    assert ready.returncode == 0, ready.stderr
    assert "readyz check passed" in ready.stdout
    client_version = kubectl(kubeconfig, "version", "--client")
    assert f"Client Version: {info.git_version}" in client_version.stdout


def test_namespace_is_created_and_finalized(core: client.CoreV1Api) -> None:
    name = f"cp-ns-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    assert core.read_namespace(name).status.phase == "Active"
    # Content that the namespace controller has to delete before it can drop its finalizer.
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"), data={"k": "v"})
    )
    wait_until(  # the serviceaccount controller reacts to the new namespace
        "serviceaccount default",
        lambda: not gone(lambda: core.read_namespaced_service_account("default", name)),
        timeout=30,
    )
    core.delete_namespace(name)
    ns = core.read_namespace(name)  # still there, Terminating, until the controller finalizes it
    assert ns.status.phase == "Terminating"
    wait_until(
        f"namespace {name} to be finalized", lambda: gone(lambda: core.read_namespace(name)), timeout=60
    )


def test_garbage_collector_deletes_dependents(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid, block_owner_deletion=True
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )
    # An orphan-to-be: a dependent of an owner that never existed is collected too.
    stale = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="ghost", uid=str(uuid.uuid4()))
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="stale", owner_references=[stale]))
    )
    core.delete_namespaced_config_map("owner", namespace)  # background propagation
    wait_until(
        "GC of the dependent secret",
        lambda: gone(lambda: core.read_namespaced_secret("dependent", namespace)),
        timeout=60,
    )
    wait_until(
        "GC of the configmap with a dangling owner",
        lambda: gone(lambda: core.read_namespaced_config_map("stale", namespace)),
        timeout=60,
    )


def test_foreground_deletion_waits_for_dependents(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="fg"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="fg", uid=owner.metadata.uid, block_owner_deletion=True
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="fg-child", owner_references=[ref]))
    )
    core.delete_namespaced_config_map(
        "fg", namespace, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    wait_until(
        "foreground deletion of owner and child",
        lambda: (
            gone(lambda: core.read_namespaced_config_map("fg", namespace))
            and gone(lambda: core.read_namespaced_config_map("fg-child", namespace))
        ),
        timeout=60,
    )


def _cronjob(name: str, schedule: str) -> client.V1CronJob:
    container = client.V1Container(
        name="tick", image="registry.invalid/busybox:never-pulled", command=["true"]
    )
    pod = client.V1PodTemplateSpec(spec=client.V1PodSpec(containers=[container], restart_policy="Never"))
    return client.V1CronJob(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1CronJobSpec(
            schedule=schedule,
            concurrency_policy="Forbid",
            job_template=client.V1JobTemplateSpec(spec=client.V1JobSpec(template=pod, backoff_limit=0)),
        ),
    )


def test_job_controller_creates_pods_for_a_job_made_from_a_cronjob(
    api: client.ApiClient, core: client.CoreV1Api, kubeconfig: str, namespace: str
) -> None:
    batch = client.BatchV1Api(api)
    batch.create_namespaced_cron_job(namespace, _cronjob("manual", "0 0 1 1 *"))
    made = kubectl(kubeconfig, "-n", namespace, "create", "job", "manual-now", "--from=cronjob/manual")
    assert made.returncode == 0, made.stderr
    job = batch.read_namespaced_job("manual-now", namespace)
    assert job.metadata.owner_references and job.metadata.owner_references[0].kind == "CronJob"
    pods = wait_until(
        "a pod for job manual-now",
        lambda: core.list_namespaced_pod(namespace, label_selector="job-name=manual-now").items,
        timeout=30,
    )
    # No kubelet and no scheduler: the pod exists but stays Pending, unscheduled.
    assert pods[0].status.phase == "Pending"
    assert not pods[0].spec.node_name


def test_cronjob_controller_schedules_a_job(api: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api)
    batch.create_namespaced_cron_job(namespace, _cronjob("every-minute", "* * * * *"))

    def scheduled_job() -> list[client.V1Job]:
        jobs = batch.list_namespaced_job(namespace).items
        return [
            j
            for j in jobs
            if any(
                r.kind == "CronJob" and r.name == "every-minute" for r in j.metadata.owner_references or []
            )
        ]

    jobs = wait_until("the cronjob controller to create a Job", scheduled_job, timeout=90, interval=1)
    assert jobs[0].metadata.name.startswith("every-minute-")
    cj = wait_until(
        "cronjob status.lastScheduleTime",
        lambda: (
            (c := batch.read_namespaced_cron_job("every-minute", namespace)).status.last_schedule_time and c
        ),
        timeout=10,
    )
    assert cj.status.active


def _token_client(api: client.ApiClient, token: str) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = api.configuration.host
    cfg.ssl_ca_cert = api.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def test_rbac_denies_an_unprivileged_serviceaccount(
    api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    ).status.token
    as_sa = client.CoreV1Api(_token_client(api, token))

    # Authenticated (a 403, not a 401) but not authorized.
    for call in (
        lambda: as_sa.list_namespaced_pod(namespace),
        lambda: as_sa.list_namespaced_secret(namespace),
        lambda: as_sa.list_namespace(),
        lambda: as_sa.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))
        ),
    ):
        with pytest.raises(ApiException) as denied:
            call()
        assert denied.value.status == 403, denied.value.body
        assert f"system:serviceaccount:{namespace}:nobody" in denied.value.body

    # A Role + RoleBinding grants exactly "list pods" in this namespace, nothing more.
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="pod-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="nobody-reads-pods"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)],
        ),
    )

    def may_list_pods() -> bool:
        try:
            as_sa.list_namespaced_pod(namespace)
        except ApiException as exc:
            if exc.status == 403:
                return False
            raise
        return True

    wait_until("the RoleBinding to take effect", may_list_pods, timeout=15)
    with pytest.raises(ApiException) as still_denied:
        as_sa.list_namespaced_secret(namespace)
    assert still_denied.value.status == 403


def test_rbac_denies_an_impersonated_user(api: client.ApiClient, kubeconfig: str, namespace: str) -> None:
    # kubectl auth can-i (SelfSubjectAccessReview as the impersonated user)
    can = kubectl(kubeconfig, "auth", "can-i", "list", "secrets", "-n", namespace, "--as", "jane")
    assert can.returncode == 1 and can.stdout.strip() == "no", (can.stdout, can.stderr)
    admin_can = kubectl(kubeconfig, "auth", "can-i", "list", "secrets", "-n", namespace)
    assert admin_can.returncode == 0 and admin_can.stdout.strip() == "yes", admin_can.stderr

    # The python client with Impersonate-User headers: a real request is refused with 403.
    impersonating = config.new_client_from_config(config_file=kubeconfig)
    impersonating.set_default_header("Impersonate-User", "jane")
    impersonating.set_default_header("Impersonate-Group", "developers")
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(impersonating).list_namespaced_secret(namespace)
    assert denied.value.status == 403
    assert json.loads(denied.value.body)["message"].startswith('secrets is forbidden: User "jane"')

    # SubjectAccessReview asked by the admin about a user: the RBAC authorizer answers.
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user="jane",
                groups=["developers"],
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace, verb="delete", resource="pods"
                ),
            )
        )
    )
    assert review.status.allowed is False


def test_crd_is_established_and_serves_custom_resources(api: client.ApiClient, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(api)
    group = f"{uuid.uuid4().hex[:8]}.cp-test.gamify.dev"
    crd_name = f"widgets.{group}"
    ext.create_custom_resource_definition(
        client.V1CustomResourceDefinition(
            metadata=client.V1ObjectMeta(name=crd_name),
            spec=client.V1CustomResourceDefinitionSpec(
                group=group,
                scope="Namespaced",
                names=client.V1CustomResourceDefinitionNames(
                    plural="widgets", singular="widget", kind="Widget"
                ),
                versions=[
                    client.V1CustomResourceDefinitionVersion(
                        name="v1",
                        served=True,
                        storage=True,
                        schema=client.V1CustomResourceValidation(
                            open_apiv3_schema=client.V1JSONSchemaProps(
                                type="object",
                                properties={
                                    "spec": client.V1JSONSchemaProps(
                                        type="object",
                                        properties={
                                            "size": client.V1JSONSchemaProps(type="integer", minimum=1)
                                        },
                                    )
                                },
                            )
                        ),
                        subresources=client.V1CustomResourceSubresources(status={}),
                    )
                ],
            ),
        )
    )
    try:

        def established() -> bool:
            crd = ext.read_custom_resource_definition(crd_name)
            return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

        wait_until("CRD Established", established, timeout=30)
        objs = client.CustomObjectsApi(api)
        body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}
        wait_until(  # discovery of the new group can lag Established by a moment
            "custom resource create",
            lambda: _try_create(
                lambda: objs.create_namespaced_custom_object(group, "v1", namespace, "widgets", body)
            ),
            timeout=15,
        )
        assert objs.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w")["spec"]["size"] == 3
        bad = dict(body, metadata={"name": "bad"}, spec={"size": 0})
        with pytest.raises(ApiException) as invalid:
            objs.create_namespaced_custom_object(group, "v1", namespace, "widgets", bad)
        assert invalid.value.status == 422  # structural schema validation is enforced
    finally:
        ext.delete_custom_resource_definition(crd_name)


def _try_create(create: Callable[[], Any]) -> bool:
    try:
        create()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_helm_installs_a_chart(
    kubeconfig: str, namespace: str, tmp_path: Path, core: client.CoreV1Api
) -> None:
    helm = controlplane_lib("cp_bin helm")
    version = run(helm, "version", "--short")
    assert version.returncode == 0 and version.stdout.startswith(
        controlplane_lib("echo $GAMIFY_HELM_VERSION")
    ), version
    chart = tmp_path / "hello"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: hello\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hi\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-hello\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    env = dict(
        os.environ,
        KUBECONFIG=kubeconfig,
        HELM_CACHE_HOME=str(tmp_path / "cache"),
        HELM_CONFIG_HOME=str(tmp_path / "config"),
        HELM_DATA_HOME=str(tmp_path / "data"),
    )
    inst = run(helm, "install", "demo", str(chart), "-n", namespace, "--set", "greeting=hello", env=env)
    assert inst.returncode == 0, inst.stderr
    assert core.read_namespaced_config_map("demo-hello", namespace).data == {"greeting": "hello"}
    uninst = run(helm, "uninstall", "demo", "-n", namespace, env=env)
    assert uninst.returncode == 0, uninst.stderr
    assert gone(lambda: core.read_namespaced_config_map("demo-hello", namespace))
