fn main() {
    std::process::exit(wqm::run(std::env::args_os()));
}
