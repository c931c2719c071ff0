"""The recipes against the published commands of alternate_sg's README, parsed independently.

tests/data/published_runs.json holds the ten published main.py commands as main.py parses
them; where alternate_sg's README is beside the checkout (../shared), a second test parses it
again and compares."""

import argparse
import json
import re
import shlex
import sys

import pytest
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

from helpers import REPO

sys.path.insert(0, str(REPO / "examples" / "paper"))
import recipes  # noqa: E402

PUBLISHED_RUNS = REPO / "tests" / "data" / "published_runs.json"
ORIGINAL_README = REPO.parent / "shared" / "seed" / "000_8044f28788ce47bf.txt"
EXPNAMES = {
    "qrnn_sg": "dni",
    "qrnn_sg_restart_rb160": "dni-restart160",
    "qrnn_sg_restart_rb5": "dni-restart5",
    "qrnn_mixture_rb160": "alt-restart160",
    "qrnn_mixture_rb5": "alt-restart5",
}


def published_runs():
    """{recipe name: alternate_sg main.py arguments} of the ten published runs (the fixture)."""
    return {name: argparse.Namespace(**args) for name, args in json.loads(PUBLISHED_RUNS.read_text())["runs"].items()}


def original_commands():
    """{recipe name: parsed alternate_sg main.py arguments} from alternate_sg's README."""
    parser = argparse.ArgumentParser()
    for flag in ["--model", "--optimizer", "--expname", "--data", "--sgtype"]:
        parser.add_argument(flag)
    for flag in [
        "--batch_size",
        "--nhid",
        "--nlayers",
        "--seed",
        "--bptt",
        "--epochs",
        "--sg_hidden_num",
        "--sg_nlayers",
    ]:
        parser.add_argument(flag, type=int)
    for flag in ["--clip", "--wdrop", "--dropouth", "--dropouti", "--lr", "--sg_dropout"]:
        parser.add_argument(flag, type=float)
    parser.add_argument("--emsize", type=int, default=400)  # AWD-LSTM's default
    parser.add_argument("--whenswitch", type=int, nargs="+", default=[])
    parser.add_argument("--restart_base", type=int, nargs="+", default=[])
    for flag in ["--cuda", "--use_sg", "--restart_lr", "--mixture"]:
        parser.add_argument(flag, action="store_true")
    found = {}
    for line in ORIGINAL_README.read_text().splitlines():
        m = re.search(r"`python3\.6 -u main\.py (.*)`", line)
        if m:
            args = parser.parse_args(shlex.split(m.group(1).replace("=", " ")))
            corpus, kind = re.match(r"(ptbword|wikiword)_(.*)", args.expname).groups()
            found[("ptb" if corpus == "ptbword" else "wt2") + "/" + EXPNAMES[kind]] = args
    return found


def recipe_cfg(name, tmp_path):
    (tmp_path / "dict.txt").write_text("a 1\n")
    train = recipes.commands(name, str(tmp_path), str(tmp_path / "ck"))[0]
    assert train[0] == "fairseq-train"
    args = options.parse_args_and_arch(options.get_training_parser(), train[1:])
    return convert_namespace_to_omegaconf(args)


def test_recipes_reproduce_the_original_commands(tmp_path):
    originals = published_runs()
    assert len(originals) == 10 and len({o.expname for o in originals.values()}) == 10
    for name, original in originals.items():
        for variant, use_sg in [(name, True)] + (
            [(name.split("/")[0] + "/bptt", False)] if name.endswith("/dni") else []
        ):
            cfg = recipe_cfg(variant, tmp_path)
            m, t = cfg.model, cfg.task
            assert (m.embed_dim, m.hidden_dim, m.num_layers) == (original.emsize, original.nhid, original.nlayers), (
                variant
            )
            assert (m.dropout_input, m.dropout_hidden, m.weight_drop) == (
                original.dropouti,
                original.dropouth,
                original.wdrop,
            ), variant
            assert cfg.optimization.clip_norm == original.clip and cfg.optimization.lr == [original.lr]
            assert cfg.dataset.batch_size == original.batch_size and t.bptt == original.bptt
            assert cfg.common.seed == original.seed and cfg.optimization.max_epoch == original.epochs
            # the original code's torch.optim.Adam: L2 weight decay (fairseq's adam decouples it)
            assert (
                cfg.optimizer._name == {"adam": "adam_l2"}[original.optimizer] and cfg.optimizer.weight_decay == 1.2e-6
            )
            assert t.use_sg == use_sg
            if not use_sg:
                continue
            assert (str(t.sg_type), t.sg_hidden, t.sg_layers, t.sg_dropout) == (
                original.sgtype.lower(),
                original.sg_hidden_num,
                original.sg_nlayers,
                original.sg_dropout,
            ), name
            assert list(t.whenswitch) == original.whenswitch and t.mixture == original.mixture, name
            assert list(t.restart_base) == original.restart_base, name
            assert (cfg.lr_scheduler._name == "warm_restarts" and cfg.lr_scheduler.restart_lr) == original.restart_lr, (
                name
            )


@pytest.mark.skipif(not ORIGINAL_README.exists(), reason="alternate_sg's README (../shared) is not beside the checkout")
def test_the_fixture_holds_the_readmes_commands():
    assert original_commands() == published_runs()


def test_dry_run_prints_train_then_test_evaluation(capsys):
    assert recipes.main(["wt2/bptt", "--data", "data-bin/wt2", "--dry-run"]) == 0
    train, evaluate = capsys.readouterr().out.strip().splitlines()
    assert train.startswith("fairseq-train data-bin/wt2 ") and "--use-sg" not in train
    assert "--gen-subset test --batch-size 1" in evaluate and "checkpoints/wt2-bptt/checkpoint_best.pt" in evaluate
    assert recipes.main(["list"]) == 0
    assert capsys.readouterr().out.split() == recipes.RUNS and len(recipes.RUNS) == 14


# awd-lstm-lm's README: its QRNN runs (main.py, then finetune.py with the same flags but seed and epochs)
AWD_README = {
    "ptb": "--model QRNN --batch_size 20 --clip 0.2 --wdrop 0.1 --nhid 1550 --nlayers 4 --emsize 400 "
    "--dropouth 0.3 --seed 9001 --dropouti 0.4 --epochs 550",
    "wt2": "--epochs 500 --data data/wikitext-2 --clip 0.25 --dropouti 0.4 --dropouth 0.2 --nhid 1550 --nlayers 4 "
    "--seed 4002 --model QRNN --wdrop 0.1 --batch_size 40",
}
AWD_FINETUNE = {"ptb": (404, 300), "wt2": (4002, 500)}
# awd-lstm-lm main.py's defaults for what the README leaves out
AWD_DEFAULTS = {
    "lr": 30.0,
    "bptt": 70,
    "dropout": 0.4,
    "dropoute": 0.1,
    "wdecay": 1.2e-6,
    "nonmono": 5,
    "alpha": 2.0,
    "beta": 1.0,
    "emsize": 400,
}


@pytest.mark.parametrize("corpus", ["ptb", "wt2"])
def test_awd_qrnn_recipes_are_the_awd_readme_commands(corpus, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    for flag in ["--model", "--data"]:
        parser.add_argument(flag)
    for flag in ["--batch_size", "--nhid", "--nlayers", "--emsize", "--seed", "--epochs"]:
        parser.add_argument(flag, type=int)
    for flag in ["--clip", "--wdrop", "--dropouth", "--dropouti"]:
        parser.add_argument(flag, type=float)
    awd = vars(parser.parse_args(shlex.split(AWD_README[corpus])))
    awd = {**AWD_DEFAULTS, **{k: v for k, v in awd.items() if v is not None}}
    (tmp_path / "dict.txt").write_text("a 1\n")
    train, finetune, evaluate = recipes.commands(f"{corpus}/awd-qrnn", str(tmp_path), str(tmp_path / "ck"))
    for command, (seed, epochs) in [(train, (awd["seed"], awd["epochs"])), (finetune, AWD_FINETUNE[corpus])]:
        cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), command[1:]))
        m, o = cfg.model, cfg.optimization
        assert (m.embed_dim, m.hidden_dim, m.num_layers) == (awd["emsize"], awd["nhid"], awd["nlayers"])
        assert (m.dropout, m.dropout_hidden, m.dropout_input, m.dropout_embed, m.weight_drop) == (
            awd["dropout"],
            awd["dropouth"],
            awd["dropouti"],
            awd["dropoute"],
            awd["wdrop"],
        )
        assert (cfg.criterion.alpha, cfg.criterion.beta) == (awd["alpha"], awd["beta"])
        assert cfg.optimizer._name == "nt_asgd" and o.lr == [awd["lr"]] and o.clip_norm == awd["clip"]
        assert (cfg.optimizer.weight_decay, cfg.optimizer.nonmono) == (awd["wdecay"], awd["nonmono"])
        assert cfg.dataset.batch_size == awd["batch_size"] and cfg.dataset.batch_size_valid == 10
        assert cfg.task.bptt == awd["bptt"] and (cfg.common.seed, o.max_epoch) == (seed, epochs)
        assert not cfg.task.use_sg
    assert cfg.optimizer.average_from_start and cfg.checkpoint.finetune_from_model == str(
        tmp_path / "ck" / "checkpoint_best.pt"
    )
    assert cfg.checkpoint.patience == 5 and cfg.checkpoint.save_dir == str(tmp_path / "ck") + "-finetune"
    assert (
        evaluate[:2] == ["fairseq-eval-lm", str(tmp_path)]
        and f"{tmp_path / 'ck'}-finetune/checkpoint_best.pt" in evaluate
    )
