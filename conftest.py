"""Repository-wide pytest setup. The harness's own plugin (options, markers, fixtures) is registered by the package's
``pytest11`` entry point, so it also works outside this checkout; here we only add pytester, which the tests of the
plugin and of the report use."""

pytest_plugins = ["pytester"]
