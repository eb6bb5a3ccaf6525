"""Package discovery for kql's layout (the metadata is in pyproject.toml).

The design card keeps the language, the planner and the saved queries in
top-level folders; they install as subpackages of ``kql``:

    kql/      -> kql          grammar/ -> kql.grammar
    planner/  -> kql.planner  queries/ -> kql.queries

Every package below those folders is found here, so a new subpackage cannot be
left out of a wheel (tests/test_packaging.py builds one and checks).
"""

from setuptools import find_packages, setup

ROOTS = {"kql": "kql", "kql.grammar": "grammar", "kql.planner": "planner",
         "kql.queries": "queries"}

packages, package_dir = [], {}
for name, folder in ROOTS.items():
    package_dir[name] = folder
    packages.append(name)
    for sub in find_packages(folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir,
      package_data={"kql.grammar": ["*.lark"], "kql.queries": ["*.kql"]})
