//! The production [`Prices`]: `aws-sdk-pricing`'s `GetProducts`.
//!
//! Owns the request (service `AmazonElastiCache`, `TERM_MATCH` on `instanceType`, `regionCode`
//! and `cacheEngine`, format `aws_v1`), following `NextToken` pages, and reading each
//! `PriceList` entry — a JSON document in a string — for its on-demand hourly price
//! (`terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD`). The API is served from a few
//! regions only (`us-east-1`, `eu-central-1`, `ap-south-1`) and lists every region's prices
//! from each, so the client has its own region (`[pricing] region`) whatever the groups'; the
//! group's region is the `regionCode` filter. Built from the same `SdkConfig` as every other
//! client (credentials, endpoint override, HTTP client); the SDK's own retries are off.

use aws_config::SdkConfig;
use aws_sdk_pricing::Client;
use aws_sdk_pricing::config::http::HttpResponse;
use aws_sdk_pricing::config::retry::RetryConfig;
use aws_sdk_pricing::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_pricing::types::{Filter, FilterType};
use serde_json::Value;

use crate::domain::NodeType;
use crate::elasticache::sdk::{SdkFailure, sdk_failure};
use crate::workflow::ports::prices::ENGINE;
use crate::workflow::ports::{BoxFuture, PriceError, Prices};

/// The Price List's name for ElastiCache.
pub const SERVICE_CODE: &str = "AmazonElastiCache";
/// The product document format asked for (the only one there is).
pub const FORMAT_VERSION: &str = "aws_v1";
/// Products per page asked for; one type in one region is a handful.
const PAGE_SIZE: i32 = 100;
/// Pages read before giving up on an answer that never ends.
const MAX_PAGES: usize = 10;

/// [`Prices`] over the AWS SDK. The client is built on the first read, as CloudWatch's.
#[derive(Debug, Clone)]
pub struct SdkPrices {
    config: SdkConfig,
    region: String,
    built: std::sync::Arc<std::sync::OnceLock<Client>>,
}

impl SdkPrices {
    /// A client for `config` calling the Price List API in `region` (`us-east-1` unless the
    /// config says otherwise), whatever `config`'s own region.
    pub fn new(config: &SdkConfig, region: &str) -> SdkPrices {
        SdkPrices {
            config: config.clone(),
            region: region.to_string(),
            built: Default::default(),
        }
    }

    fn client(&self) -> &Client {
        self.built.get_or_init(|| {
            let conf = aws_sdk_pricing::config::Builder::from(&self.config)
                .region(aws_sdk_pricing::config::Region::new(self.region.clone()))
                .retry_config(RetryConfig::disabled())
                .build();
            Client::from_conf(conf)
        })
    }

    async fn read(&self, region: &str, node_type: &NodeType) -> Result<Option<f64>, PriceError> {
        let term = |field: &str, value: String| {
            Filter::builder()
                .r#type(FilterType::TermMatch)
                .field(field)
                .value(value)
                .build()
                .expect("type, field and value are set")
        };
        let filters = vec![
            term("instanceType", node_type.to_string()),
            term("regionCode", region.to_string()),
            term("cacheEngine", ENGINE.to_string()),
        ];
        let mut entries = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .client()
                .get_products()
                .service_code(SERVICE_CODE)
                .format_version(FORMAT_VERSION)
                .set_filters(Some(filters.clone()))
                .max_results(PAGE_SIZE)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(from_sdk)?;
            entries.extend(page.price_list().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return on_demand_hourly(&entries, node_type),
            }
        }
        Err(PriceError::Unreadable {
            code: "TooManyPages".into(),
            message: format!("more than {MAX_PAGES} pages of products for {node_type}"),
        })
    }
}

impl Prices for SdkPrices {
    fn on_demand_hourly<'a>(
        &'a self,
        region: &'a str,
        node_type: &'a NodeType,
    ) -> BoxFuture<'a, Result<Option<f64>, PriceError>> {
        Box::pin(self.read(region, node_type))
    }
}

fn unreadable(message: impl Into<String>) -> PriceError {
    PriceError::Unreadable {
        code: "UnexpectedResponse".into(),
        message: message.into(),
    }
}

/// The on-demand USD per node-hour of `node_type` in a page's `PriceList` entries (each a JSON
/// product document in a string): the hourly dimensions of the `OnDemand` terms of the
/// products that are node usage of that type. `None`: no such price is listed. Products that
/// are not node-hours (`usagetype` without `NodeUsage`, e.g. extended support) and zero
/// prices are passed over; two different prices are an error rather than a guess.
pub fn on_demand_hourly(
    entries: &[String],
    node_type: &NodeType,
) -> Result<Option<f64>, PriceError> {
    let wanted = node_type.to_string();
    let mut found: Vec<f64> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let doc: Value = serde_json::from_str(entry)
            .map_err(|e| unreadable(format!("PriceList entry {i} is not JSON: {e}")))?;
        let attributes = &doc["product"]["attributes"];
        let of_type = attributes["instanceType"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case(&wanted));
        let node_usage = attributes["usagetype"]
            .as_str()
            .is_none_or(|u| u.contains("NodeUsage"));
        if !of_type || !node_usage {
            continue;
        }
        let Some(terms) = doc["terms"]["OnDemand"].as_object() else {
            continue;
        };
        for term in terms.values() {
            let Some(dimensions) = term["priceDimensions"].as_object() else {
                continue;
            };
            for d in dimensions.values() {
                let hourly = d["unit"]
                    .as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case("Hrs"));
                let Some(usd) = d["pricePerUnit"]["USD"].as_str().filter(|_| hourly) else {
                    continue;
                };
                let price: f64 = usd.trim().parse().map_err(|_| {
                    unreadable(format!(
                        "a price of `{}` USD for {wanted}",
                        usd.escape_debug()
                    ))
                })?;
                if price.is_finite() && price > 0.0 && !found.contains(&price) {
                    found.push(price);
                }
            }
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(unreadable(format!(
            "{} different on-demand prices listed for {wanted}: {}",
            many.len(),
            many.iter()
                .map(|p| format!("${p}/h"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Sort an SDK failure by what the caller does next (the sorting every AWS call shares).
fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> PriceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match sdk_failure(err) {
        SdkFailure::Answered {
            code,
            message,
            status,
        } => PriceError::classify(&code, message, Some(status)),
        SdkFailure::Transient { code, message } => PriceError::Unavailable { code, message },
        SdkFailure::Other { code, message } => PriceError::Unreadable { code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One product as GetProducts lists it (format aws_v1): the product, its on-demand term
    /// and, as AWS sends them along, its reserved terms (which must not be read as on demand).
    fn product(instance: &str, usagetype: &str, on_demand: &str) -> String {
        serde_json::json!({
            "product": {
                "productFamily": "Cache Instance",
                "attributes": {
                    "servicecode": "AmazonElastiCache",
                    "location": "US East (N. Virginia)",
                    "locationType": "AWS Region",
                    "instanceType": instance,
                    "currentGeneration": "Yes",
                    "instanceFamily": "Memory optimized",
                    "vcpu": "2",
                    "memory": "13.07 GiB",
                    "networkPerformance": "Up to 10 Gigabit",
                    "cacheEngine": "Redis",
                    "usagetype": usagetype,
                    "operation": "CreateCacheCluster:0002",
                    "regionCode": "us-east-1",
                    "servicename": "Amazon ElastiCache"
                },
                "sku": "Q6KJ4T6S2YT5WPSA"
            },
            "serviceCode": "AmazonElastiCache",
            "terms": {
                "OnDemand": {
                    "Q6KJ4T6S2YT5WPSA.JRTCKXETXF": {
                        "priceDimensions": {
                            "Q6KJ4T6S2YT5WPSA.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": format!("${on_demand} per Redis {instance} Node Hour"),
                                "appliesTo": [],
                                "rateCode": "Q6KJ4T6S2YT5WPSA.JRTCKXETXF.6YS6EN2CT7",
                                "beginRange": "0",
                                "pricePerUnit": {"USD": on_demand}
                            }
                        },
                        "sku": "Q6KJ4T6S2YT5WPSA",
                        "effectiveDate": "2025-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {}
                    }
                },
                "Reserved": {
                    "Q6KJ4T6S2YT5WPSA.4NA7Y494T4": {
                        "priceDimensions": {
                            "Q6KJ4T6S2YT5WPSA.4NA7Y494T4.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "description": "Redis, cache.r6g.large reserved instance applied",
                                "pricePerUnit": {"USD": "0.1300000000"}
                            }
                        },
                        "termAttributes": {"LeaseContractLength": "1yr", "PurchaseOption": "No Upfront"}
                    }
                }
            },
            "version": "20251101000000",
            "publicationDate": "2025-11-01T00:00:00Z"
        })
        .to_string()
    }

    fn t(s: &str) -> NodeType {
        NodeType::parse(s).unwrap()
    }

    #[test]
    fn the_on_demand_hourly_price_is_read_from_a_product_document() {
        let entries = [product(
            "cache.r6g.large",
            "NodeUsage:cache.r6g.large",
            "0.2060000000",
        )];
        assert_eq!(
            on_demand_hourly(&entries, &t("cache.r6g.large")),
            Ok(Some(0.206))
        );
        // Outside us-east-1 the usage type carries a region prefix.
        let entries = [product(
            "cache.r6g.large",
            "EUW1-NodeUsage:cache.r6g.large",
            "0.2290000000",
        )];
        assert_eq!(
            on_demand_hourly(&entries, &t("cache.r6g.large")),
            Ok(Some(0.229))
        );
    }

    #[test]
    fn other_types_other_usages_and_zero_prices_are_passed_over() {
        let entries = [
            product(
                "cache.r6g.xlarge",
                "NodeUsage:cache.r6g.xlarge",
                "0.4110000000",
            ),
            product(
                "cache.r6g.large",
                "ExtendedSupport:cache.r6g.large",
                "0.1000000000",
            ),
            product(
                "cache.r6g.large",
                "NodeUsage:cache.r6g.large",
                "0.0000000000",
            ),
        ];
        assert_eq!(on_demand_hourly(&entries, &t("cache.r6g.large")), Ok(None));
        assert_eq!(on_demand_hourly(&[], &t("cache.r6g.large")), Ok(None));
        // The same price twice (two SKUs) is one price.
        let twice = [
            product("cache.r6g.large", "NodeUsage:cache.r6g.large", "0.206"),
            product(
                "cache.r6g.large",
                "NodeUsage:cache.r6g.large",
                "0.2060000000",
            ),
        ];
        assert_eq!(
            on_demand_hourly(&twice, &t("cache.r6g.large")),
            Ok(Some(0.206))
        );
    }

    #[test]
    fn an_answer_that_is_not_a_price_list_is_unreadable_not_a_guess() {
        let large = t("cache.r6g.large");
        let e = on_demand_hourly(&["{not json".to_string()], &large).unwrap_err();
        assert!(
            e.to_string().contains("PriceList entry 0 is not JSON"),
            "{e}"
        );
        let bad = [product(
            "cache.r6g.large",
            "NodeUsage:cache.r6g.large",
            "free",
        )];
        let e = on_demand_hourly(&bad, &large).unwrap_err();
        assert!(e.to_string().contains("a price of `free` USD"), "{e}");
        let two = [
            product("cache.r6g.large", "NodeUsage:cache.r6g.large", "0.206"),
            product("cache.r6g.large", "NodeUsage:cache.r6g.large", "0.25"),
        ];
        let e = on_demand_hourly(&two, &large).unwrap_err();
        assert!(
            e.to_string().contains("2 different on-demand prices"),
            "{e}"
        );
    }

    #[test]
    fn errors_are_sorted_by_what_the_operator_does() {
        assert!(matches!(
            PriceError::classify("AccessDeniedException", "no", Some(400)),
            PriceError::Denied { .. }
        ));
        assert!(matches!(
            PriceError::classify("ThrottlingException", "slow down", Some(400)),
            PriceError::Unavailable { .. }
        ));
        assert!(matches!(
            PriceError::classify("Whatever", "x", Some(503)),
            PriceError::Unavailable { .. }
        ));
        assert!(matches!(
            PriceError::classify("InvalidParameterException", "x", Some(400)),
            PriceError::Unreadable { .. }
        ));
    }
}
