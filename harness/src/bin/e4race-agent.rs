fn main() {
    e4race_agent::main()
}
