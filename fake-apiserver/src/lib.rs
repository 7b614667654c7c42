//! An in-process fake Kubernetes apiserver for the operator tests.
