//! Lists and ranges on the command line, for matrix runs and sweeps:
//! `--impl all`, `--impl threadpool,two-stage`, `--load 1k..20k/1k`, `--load 2k,5k,max`,
//! `--threads 1..8/1`, `--workload herd-mixed,herd-query`.

use std::str::FromStr;

use herd_record::units::Load;

/// Parses a comma list whose items are single values or `FROM..TO/STEP` ranges (inclusive).
fn expand<T: FromStr<Err = String> + Copy>(
    text: &str,
    step: impl Fn(T, T, T) -> Result<Vec<T>, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once("..") {
            Some((from, rest)) => {
                let (to, by) =
                    rest.split_once('/').ok_or_else(|| format!("`{item}`: a range needs a step, e.g. 1k..20k/1k"))?;
                out.extend(step(from.parse()?, to.parse()?, by.parse()?)?);
            }
            None => out.push(item.parse()?),
        }
    }
    if out.is_empty() {
        return Err(format!("`{text}`: expected at least one value"));
    }
    Ok(out)
}

/// `--load`: one or more loads.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadList(pub Vec<Load>);

impl FromStr for LoadList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        expand(s, |from: Load, to: Load, by: Load| match (from, to, by) {
            (Load::Rate(a), Load::Rate(b), Load::Rate(step)) if a <= b => {
                let n = ((b - a) / step + 1e-9).floor() as usize;
                if n > 1000 {
                    return Err(format!("{a}..{b}/{step} is more than 1,000 runs"));
                }
                Ok((0..=n).map(|i| Load::Rate(a + step * i as f64)).collect())
            }
            _ => Err("a load range is FROM..TO/STEP with rates and FROM ≤ TO, e.g. 1k..20k/1k".into()),
        })
        .map(LoadList)
    }
}

/// `--threads`: one or more thread counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadList(pub Vec<usize>);

#[derive(Debug, Clone, Copy)]
struct Count(usize);

impl FromStr for Count {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Count(n)),
            _ => Err(format!("`{s}`: expected a positive thread count such as 4, a list 1,2,4, or a range 1..8/1")),
        }
    }
}

impl FromStr for ThreadList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        expand(s, |Count(a), Count(b), Count(step)| {
            if a > b {
                return Err("a thread range is FROM..TO/STEP with FROM ≤ TO, e.g. 1..8/1".into());
            }
            Ok((a..=b).step_by(step).map(Count).collect())
        })
        .map(|v| ThreadList(v.into_iter().map(|Count(n)| n).collect()))
    }
}

/// A comma list of names (`all` is expanded by the caller).
pub fn names(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_ranges_and_lists() {
        let l: LoadList = "1k..3k/1k,max".parse().expect("valid");
        assert_eq!(l.0, vec![Load::Rate(1000.0), Load::Rate(2000.0), Load::Rate(3000.0), Load::Max]);
        let l: LoadList = "10k".parse().expect("valid");
        assert_eq!(l.0, vec![Load::Rate(10_000.0)]);
        for bad in ["1k..3k", "3k..1k/1k", "1k..max/1k", "", "tenk"] {
            let err = bad.parse::<LoadList>().expect_err(bad);
            assert!(err.contains("10k") || err.contains("1k..20k/1k") || err.contains("value"), "{bad}: {err}");
        }
    }

    #[test]
    fn thread_ranges_and_lists() {
        assert_eq!("1..4/1".parse::<ThreadList>().expect("valid").0, vec![1, 2, 3, 4]);
        assert_eq!("1,2,8".parse::<ThreadList>().expect("valid").0, vec![1, 2, 8]);
        assert_eq!("2..8/3".parse::<ThreadList>().expect("valid").0, vec![2, 5, 8]);
        assert!("0".parse::<ThreadList>().is_err());
        assert!("4..1/1".parse::<ThreadList>().is_err());
    }
}
