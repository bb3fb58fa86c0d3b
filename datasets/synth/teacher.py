"""Teachers: pretrained potentials that label frames. Imported lazily (optional extra).

A teacher returns :class:`Labels` in the project's units and sign (docs/architecture.md §1):
total energy eV, forces eV/Å (= −∂E/∂x), stress eV/Å³ with ASE's sign (σ = (1/V) ∂E/∂ε,
positive = tensile), magmoms μB. For CHGNet 0.4.2 these conventions were checked by finite
differences (docs/embedded_dataset.md, "Teacher conventions").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from ase import Atoms

INSTALL_HINT = ("install the teacher extra: `pip install -e '.[teacher]'` "
                "(or `pip install chgnet==0.4.2`); only needed to regenerate the dataset")


class TeacherUnavailable(RuntimeError):
    """The requested teacher package is not importable (or the name is unknown)."""


@dataclass(frozen=True)
class Labels:
    """Teacher labels of one frame. energy () eV; forces (N,3) eV/Å; stress (3,3) eV/Å³;
    magmoms (N,) μB or None."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray
    magmoms: np.ndarray | None


class ChgnetTeacher:
    """CHGNet (pretrained weights shipped in the `chgnet` wheel) as a labeller.

    `threads` sets torch's intra-op threads; keep it fixed for byte-reproducible output
    (float reductions depend on the thread count).
    """

    name = "chgnet"

    def __init__(self, model_version: str = "0.3.0", threads: int = 1) -> None:
        try:
            import chgnet
            import torch
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator
        except ImportError as exc:
            raise TeacherUnavailable(f"the 'chgnet' teacher is not importable ({exc}); "
                                     f"{INSTALL_HINT}") from exc
        torch.set_num_threads(threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = CHGNet.load(model_name=model_version, use_device="cpu", verbose=False)
        self.package_version = str(chgnet.__version__)
        self.model_version = str(getattr(self.model, "version", None) or model_version)
        self.torch_version = str(torch.__version__)
        self.threads = threads
        # stress_weight converts CHGNet's GPa to eV/Å³; its sign already matches ASE's.
        self.calculator = CHGNetCalculator(model=self.model, use_device="cpu",
                                           on_isolated_atoms="error")

    # Provenance strings (used as extxyz info values: no spaces, never parse as numbers).
    @property
    def teacher_tag(self) -> str:
        return f"{self.name}-{self.package_version}"

    @property
    def model_tag(self) -> str:
        return f"{self.name}-{self.model_version}"

    @property
    def task_tag(self) -> str:
        return f"{self.name}-{self.model_version}-distill"

    def provenance(self) -> dict[str, str | int]:
        """Versions that determine the labels."""
        return {"name": self.name, "package_version": self.package_version,
                "model_version": self.model_version, "torch_version": self.torch_version,
                "threads": self.threads}

    def labels_from_calculator(self, atoms: Atoms) -> Labels:
        """Labels of `atoms`, whose calculator is (or caches results of) this teacher."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            energy = float(atoms.get_potential_energy())
            forces = np.asarray(atoms.get_forces(), dtype=np.float64)
            stress = np.asarray(atoms.get_stress(voigt=False), dtype=np.float64)
            magmoms = np.asarray(atoms.calc.results["magmoms"], dtype=np.float64).reshape(-1)
        return Labels(energy, forces, stress, magmoms)

    def label(self, atoms: Atoms) -> Labels:
        """Energy, forces, stress and magmoms of a copy of `atoms`."""
        work = atoms.copy()
        work.calc = self.calculator
        return self.labels_from_calculator(work)

    def energy(self, atoms: Atoms) -> float:
        """Total energy (eV) only: skips the force/stress backward pass (for volume scans)."""
        from pymatgen.io.ase import AseAtomsAdaptor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = self.model.predict_structure(AseAtomsAdaptor.get_structure(atoms), task="e")
        return float(pred["e"]) * len(atoms)


_TEACHERS = {"chgnet": ChgnetTeacher}


def load_teacher(name: str, model_version: str | None = None, threads: int = 1) -> ChgnetTeacher:
    """Instantiate a teacher by name; raises TeacherUnavailable with an install hint."""
    try:
        cls = _TEACHERS[name]
    except KeyError:
        raise TeacherUnavailable(f"unknown teacher {name!r}; available: {sorted(_TEACHERS)}")\
            from None
    kwargs = {} if model_version is None else {"model_version": model_version}
    return cls(threads=threads, **kwargs)
