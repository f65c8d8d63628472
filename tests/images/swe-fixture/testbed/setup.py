from setuptools import setup

setup(name="calc", version="0.1", py_modules=["calc"])
