# Names vulture cannot see used: `make lint` runs `vulture src/ .vulture_allow.py`. Each line is a name that is
# called or read by something other than our code (Python, pytest, pluggy, tqdm, argparse, tarfile, requests).
# ruff: noqa
# fmt: off

# module protocol: attribute lookup and dir() of a package (lazy public API)
__getattr__
__dir__

# stores named in the scheme table by "module:Class" strings, imported on first use (modelship.stores)
AzureBlobSource
HttpSource
LocalSource
S3Source
FolderRepository  # and the repositories over them (modelship.repos)
OciRepository

# attributes read by the library objects they are set on
_.usage             # argparse.ArgumentParser
_.mtime             # tarfile.TarInfo
_.uid
_.gid
_.uname
_.gname
_.linkname
monitor_interval    # tqdm class attribute
_.trust_env         # requests.Session
_.shouldfail        # pytest.Session
_.readable          # io.RawIOBase protocol
_.readinto

# pytest: hooks, fixtures, and the Item/Collector protocol
pytest_addhooks
pytest_addoption
pytest_configure
_.pytest_sessionstart
_.pytest_report_header
_.pytest_make_collect_report
_.pytest_collection_finish
_.pytest_runtest_makereport
_.pytest_runtest_logreport
_.pytest_runtest_logstart
_.pytest_runtest_setup
_.pytest_runtest_teardown
pytest_collect_file
pytest_collection_modifyitems
pytest_unconfigure
_.pytest_terminal_summary
_.pytest_sessionfinish
_.pytest_warning_recorded
_.pytest_keyboard_interrupt
_.setup
_.runtest
_.reportinfo
_.collect
modelship_client    # fixture
_.predict           # ModelshipClient: for users' tests
_.ignore_aliases    # yaml.SafeDumper hook: deploy._NoAliases

# read by the signature and attestation verbs of the next issue (tested in tests/unit/test_oci_registry.py)
_.referrers         # modelship.oci.registry.RegistryClient

# the cases file as Case objects, for users' own tests (examples/flask_app/tests/test_gunicorn.py)
load_file
