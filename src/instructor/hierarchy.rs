//! Node hierarchies (DESIGN §2 "Hierarchy"): a node's upstream may be another LISTO node. The
//! tree is given as `child listen address → parent listen address`; loops are refused at load.

use std::collections::HashMap;

/// Checks a parent relation over node indices and returns, for every node, its chain of
/// ancestors (nearest first). `names` is used for error messages only.
pub(crate) fn ancestors(parents: &HashMap<usize, usize>, names: &[String]) -> Result<Vec<Vec<usize>>, String> {
    let n = names.len();
    let mut chains = vec![Vec::new(); n];
    for (start, chain) in chains.iter_mut().enumerate() {
        let mut at = start;
        let mut seen = vec![start];
        while let Some(&p) = parents.get(&at) {
            if let Some(pos) = seen.iter().position(|&s| s == p) {
                let mut cycle: Vec<&str> = seen[pos..].iter().map(|&i| names[i].as_str()).collect();
                cycle.push(names[p].as_str());
                return Err(format!("parents: loop {}", cycle.join(" → ")));
            }
            seen.push(p);
            chain.push(p);
            at = p;
            if chain.len() > n {
                return Err("parents: loop".into());
            }
        }
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn chains_and_loops() {
        let p: HashMap<usize, usize> = [(0, 1), (1, 2), (3, 2)].into_iter().collect();
        let c = ancestors(&p, &names(4)).unwrap();
        assert_eq!(c[0], vec![1, 2]);
        assert_eq!(c[2], Vec::<usize>::new());
        assert_eq!(c[3], vec![2]);
        let p: HashMap<usize, usize> = [(0, 1), (1, 2), (2, 0)].into_iter().collect();
        let e = ancestors(&p, &names(3)).unwrap_err();
        assert!(e.contains("loop n0 → n1 → n2 → n0"), "{e}");
        let p: HashMap<usize, usize> = [(0, 0)].into_iter().collect();
        assert!(ancestors(&p, &names(1)).unwrap_err().contains("loop"));
    }
}
