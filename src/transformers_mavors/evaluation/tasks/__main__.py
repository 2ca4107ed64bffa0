"""`python -m transformers_mavors.evaluation.tasks OUT`: write the offline lmms-eval tasks under OUT."""

import argparse

from . import TASK_NAMES, write_tasks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="folder for the videos, JSONL files and task YAML files")
    parser.add_argument(
        "--per-kind", type=int, default=2, help="multiple-choice questions per kind (default 2)"
    )
    parser.add_argument("--captions", type=int, default=3, help="caption questions (default 3)")
    args = parser.parse_args(argv)
    written = write_tasks(args.out, args.per_kind, args.captions)
    print(f"wrote {len(written['mc'])} multiple-choice and {len(written['caption'])} caption questions")
    print(
        f"run: python -m lmms_eval --include_path {written['include_path']} --tasks {','.join(TASK_NAMES)} ..."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
