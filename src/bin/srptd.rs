fn main() {
    eprintln!("srptd: the target binary is not built yet");
    std::process::exit(1);
}
