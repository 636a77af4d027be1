-- description: The best-rated movies among those with at least min_ratings ratings
-- param: min_ratings = 50
-- param: limit = 20
SELECT m.item_id, m.title, m.year, count(*) AS n_ratings, round(avg(r.rating), 3) AS mean_rating
FROM clean_ratings r
JOIN clean_movies m USING (item_id)
GROUP BY ALL
HAVING count(*) >= $min_ratings
ORDER BY mean_rating DESC, n_ratings DESC, m.item_id
LIMIT $limit;
