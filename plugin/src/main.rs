//! `kubectl-multicluster`: everything lives in the library; this only hands over the exit code.

fn main() -> std::process::ExitCode {
    kubectl_multicluster::cli::main()
}
