-- description: How many ratings each rating value has, and its share of all ratings
SELECT rating,
       count(*) AS n_ratings,
       round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS percent
FROM clean_ratings
GROUP BY rating
ORDER BY rating;
