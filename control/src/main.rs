//! `flowgate`: the daemon and its offline tools.

fn main() {
    println!("flowgate");
}
