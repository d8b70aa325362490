"""Shared bases and compatibility by construction, on a real coordinator with authentication:
`admin base publish` (validated like any upload, admins only, as site 'base'), `site_agent train --init-from`
(downloaded, checked, fine-tuned from), `--like-site` (another site's architecture, specs only), and the
`admin modules` / `admin sites` listings (categories, roles, input sizes, channels, sha256)."""
from __future__ import annotations

import json

import grpc
import pytest
import torch

from common.patterns import BASE_SITE
from common.registry_client import make_header, upload
from coordinator.admin import main as admin_main
from common.guard import ADMIN, SITE
from protos.nt.v1 import common_pb2, control_pb2, registry_pb2
from site_agent.cli import main as site_main
from site_agent.train import TrainOptions, train_site
from site_agent.workspace import load_info, load_spec_module
from tests.helpers.cluster import SMALL, coordinator, issue, job_spec, push_site, stubs
from tests.helpers.registry import nan_weights
from transplant.spec import load_module


@pytest.fixture(scope="module")
def world(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    auth_file = root / "auth.json"
    tokens = {name: issue(auth_file, SITE, name) for name in ("acme", "dogs")}
    tokens["admin"] = issue(auth_file, ADMIN, "alice")
    for name, token in tokens.items():
        (root / f"{name}.token").write_text(token)
    handle = coordinator(root, auth_file=auth_file)
    clients = {name: stubs(handle.address, token) for name, token in tokens.items()}
    push_site(clients["dogs"].registry, "dogs", "dog", seed=1)  # SMALL: 1x16x16 input, 4 channels out
    base = root / "base-ws"  # the base a coordinator trains on its own generated data
    train_site(TrainOptions(site_id="base-trainer", data="digits:0", size=16, width=4, depth=3, fc=16, epochs=1),
               base, progress=False)
    yield {"address": handle.address, "root": root, "c": clients, "base": base}
    for client in clients.values():
        client.close()
    handle.stop(grace_s=1)


def _admin(world, *argv: str) -> int:
    return admin_main(["--coordinator", world["address"], "--token-file", str(world["root"] / "admin.token"), *argv])


def _site(world, *argv: str) -> int:
    return site_main([*argv, "--coordinator", world["address"], "--token-file", str(world["root"] / "acme.token")])


def test_publish_a_base_and_fine_tune_from_it(world, tmp_path, capsys):
    assert _admin(world, "base", "publish", "--name", "digits-base", "--from", str(world["base"])) == 0
    assert "published base 'digits-base'" in capsys.readouterr().out
    assert _admin(world, "base", "list", "--json") == 0
    bases = json.loads(capsys.readouterr().out)
    assert {(d["site_id"], d["category"], d["role"]) for d in bases} == {
        (BASE_SITE, "digits-base", "category"), (BASE_SITE, "digits-base", "task")}
    ws = tmp_path / "ws"
    # lr 0: the teacher must still be the base, bit for bit: proof it started from the downloaded weights
    assert _site(world, "train", "--workspace", str(ws), "--site-id", "acme", "--data", "digits:3",
                 "--init-from", "digits-base", "--epochs", "1", "--lr", "0", "--no-progress") == 0
    assert "started from base:digits-base" in capsys.readouterr().out
    base, mine = load_module(world["base"] / "category"), load_spec_module(ws)
    for name, value in base.weights().items():
        torch.testing.assert_close(mine.weights()[name], value, rtol=0, atol=0)
    info = load_info(ws)
    assert info.architecture == load_info(world["base"]).architecture
    assert info.training["start"]["source"] == "base:digits-base" and len(info.training["start"]["modules"]) == 2
    listed = world["c"]["acme"].registry.List(registry_pb2.ListModulesRequest(site_id=BASE_SITE)).modules
    assert {m.module_id for m in listed} == set(info.training["start"]["modules"])  # sites may read bases


def test_only_admins_publish_bases(world, tmp_path, capsys):
    (spec, data) = (load_module(world["base"] / "category").spec.dumps(),
                    (world["base"] / "category" / "module.safetensors").read_bytes())
    header = make_header(BASE_SITE, "evil", common_pb2.CATEGORY, data, spec, feature_norm_mean=1.0)
    with pytest.raises(grpc.RpcError) as err:
        upload(world["c"]["acme"].registry, header, data)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    header = make_header("acme", "cat", common_pb2.CATEGORY, data, spec, feature_norm_mean=1.0)
    with pytest.raises(grpc.RpcError) as err:  # an admin uploads bases, not a site's modules
        upload(world["c"]["admin"].registry, header, data)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    bad = tmp_path / "bad"
    (bad / "category").mkdir(parents=True)
    (bad / "category" / "module.json").write_text(spec)
    (bad / "category" / "module.safetensors").write_bytes(nan_weights(spec, data))
    assert _admin(world, "base", "publish", "--name", "broken", "--from", str(bad)) == 2  # validated like any upload
    assert "NaN" in capsys.readouterr().err
    assert _site(world, "train", "--workspace", str(tmp_path / "ws"), "--site-id", "acme", "--data", "digits:3",
                 "--init-from", "nope", "--no-progress") == 2
    assert "no base 'nope'" in capsys.readouterr().err


def test_like_site_takes_the_architecture_of_the_net_to_join(world, tmp_path, capsys):
    assert _site(world, "train", "--workspace", str(tmp_path / "ws"), "--site-id", "acme", "--data", "digits:5",
                 "--like-site", "dogs", "--epochs", "1", "--no-progress") == 0
    info = load_info(tmp_path / "ws")
    assert info.size == SMALL.image_size and tuple(info.architecture["widths"]) == SMALL.widths
    assert tuple(info.architecture["fc"]) == SMALL.fc and "weights" not in json.dumps(info.training["start"]["modules"])
    assert info.training["start"]["weights"] is False
    assert _site(world, "train", "--workspace", str(tmp_path / "ws2"), "--site-id", "acme", "--data", "digits:5",
                 "--like-site", "dogs", "--size", "32", "--no-progress") == 2
    assert "--size: the architecture comes from site:dogs" in capsys.readouterr().err
    registry = world["c"]["acme"].registry  # another site's modules: specs only, and only when asked by role
    shown = registry.List(registry_pb2.ListModulesRequest(site_id="dogs", role=common_pb2.CATEGORY)).modules
    assert len(shown) == 1 and shown[0].spec_json and not shown[0].module_id and not shown[0].sha256
    with pytest.raises(grpc.RpcError) as err:
        registry.List(registry_pb2.ListModulesRequest(site_id="dogs"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_admin_modules_and_sites_show_inputs_channels_and_digests(world, capsys):
    assert _admin(world, "modules", "--site", "dogs", "--json") == 0
    docs = json.loads(capsys.readouterr().out)
    assert {(d["role"], d["task"]) for d in docs} == {("category", ""), ("task", "classification")}
    category = next(d for d in docs if d["role"] == "category")
    assert category["input_shape"] == [1, 16, 16] and category["out_channels"] == SMALL.widths[0]
    assert len(category["sha256"]) == 64 and category["category"] == "dog"
    assert _admin(world, "sites", "--json") == 0
    sites = {d["site_id"]: d for d in json.loads(capsys.readouterr().out)}
    assert BASE_SITE not in sites and sites["dogs"]["inputs"] == ["1x16x16"] and sites["dogs"]["channels"] == [4]
    assert _admin(world, "modules") == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:5] == ["SITE", "CATEGORY", "ROLE", "TASK", "INPUT"] and "1x16x16" in table


def test_an_incompatible_site_is_told_before_any_job_runs(world, tmp_path, capsys):
    """Defaults (8 channels out) do not fit dogs' task module (reads 4): refused at submit; --like-site fits."""
    control = world["c"]["admin"].control
    for data, extra in (("digits:6", ()), ("digits:7", ("--like-site", "dogs"))):
        ws = tmp_path / data.replace(":", "-")
        assert _site(world, "train", "--workspace", str(ws), "--site-id", "acme", "--data", data, "--epochs", "1",
                     "--no-progress", *extra) == 0
        assert _site(world, "push", "--workspace", str(ws), "--no-progress") == 0
    capsys.readouterr()
    with pytest.raises(grpc.RpcError) as err:
        control.SubmitJob(control_pb2.SubmitJobRequest(spec=job_spec("acme", "dogs", "6")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "shapes do not fit" in err.value.details()
    job = control.SubmitJob(control_pb2.SubmitJobRequest(spec=job_spec("acme", "dogs", "7"))).job
    assert job.job_id
    control.CancelJob(control_pb2.CancelJobRequest(job_id=job.job_id))


def test_an_imported_imagenet_style_base_is_fine_tuned_on_normalised_images(world, tmp_path, capsys):
    """A torchvision-layout VGG-16 (ImageNet normalisation) published as a base: the site that starts from it
    feeds its data normalised the same way, records it, and starts from exactly its weights."""
    from site_agent.importer import IMAGENET_MEAN, IMAGENET_STD
    from tests.helpers.site_nets import vgg_state_dict, write_folder
    from transplant.spec.schema import preprocess_of

    folder = write_folder(tmp_path / "images", {"cat": 6, "random": 6})
    state, _ = vgg_state_dict(outputs=2)
    torch.save(state, tmp_path / "vgg16.pth")
    assert site_main(["import", "--workspace", str(tmp_path / "base"), "--site-id", "zoo", "--data",
                      f"folder:{folder}:random", "--weights", str(tmp_path / "vgg16.pth"), "--input-size", "32"]) == 0
    assert _admin(world, "base", "publish", "--name", "vgg16-base", "--from", str(tmp_path / "base")) == 0
    ws = tmp_path / "ws"
    assert _site(world, "train", "--workspace", str(ws), "--site-id", "acme", "--data", f"folder:{folder}:cat",
                 "--init-from", "vgg16-base", "--epochs", "1", "--lr", "0", "--no-progress") == 0
    info, category = load_info(ws), load_spec_module(ws)
    assert info.mean == list(IMAGENET_MEAN) and info.std == list(IMAGENET_STD) and info.size == 32
    assert preprocess_of(category.spec)["mean"] == list(IMAGENET_MEAN)
    base = load_module(tmp_path / "base" / "category")
    for name, value in base.weights().items():
        torch.testing.assert_close(category.weights()[name], value, rtol=0, atol=0)
