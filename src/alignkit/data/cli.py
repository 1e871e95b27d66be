"""``alignkit data math | verifiable-prefs``: the offline data generators, registered like every command."""

from __future__ import annotations

from alignkit.commands import Command, Group

COMMANDS = [
    Group("data", "offline data generators: math problems, verified preference data from a model's samples"),
    Command("data math", "math problems with reference solutions and checkable answers, SFT rows and stepwise "
            "PRM rows", "alignkit.data.mathgen:MathDataConfig", "alignkit.data.mathgen:run_math_data",
            save_to="output_dir", description="Generated offline from a seed (docs/math_data.md)."),
    Command("data verifiable-prefs", "sample K answers per verifiable-instruction prompt, verify them, write "
            "preference pairs, K-way rows, SFT rows and the held-out prompts",
            "alignkit.pipelines.verifiable_prefs:VerifiablePrefsConfig",
            "alignkit.pipelines.verifiable_prefs:run_verifiable_prefs",
            description="How the shipped files in alignkit/data/demo/ are made (docs/demo_data.md); the summary "
            "records the command that re-runs it."),
]
